"""GPU decoding (indexer/nvdec.py) on a machine without one: the choice of decoder and its refusals, and the
GPU path's own code (timeline, frame choice, plane conversion, events, the pool, the CPU fallback) run on
CPU tensors with PyAV standing in for PyNvVideoCodec's demuxer and decoder. Real files, real SQLite."""

from __future__ import annotations

import importlib.util
import io
import logging
import sys
import threading
import time
import types
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from indexer_fixtures import make_settings, run_ingest, tiny_checkpoint, tiny_encoder  # noqa: F401 (fixtures)
from media import write_video
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import undefer
from typer.testing import CliRunner

from indexer import nvdec, nvdec_source
from indexer.catalog import Clip, Video, VideoStatus
from indexer.db import make_sessionmaker, open_catalog
from indexer.decode import DecodedChunk, DecodeSpec, Probed, decode_video
from indexer.encode import encode_clips
from indexer.errors import IndexerError
from indexer.nvdec_source import StreamFacts, UseCpu
from indexer.workers import Task
from model.media import write_video as write_media
from model.preprocess import FramePreprocess
from model.video import VideoReader
from model.video_frames import AVFrame
from model.video_pyav import frame_rate
from tvr_cli import app

# --- a stand-in for PyNvVideoCodec: PyAV demuxes and decodes to YUV planes, on the CPU -------------------------


class PyAVPlanes:
    """``nvdec_source.FrameSource`` over PyAV: facts through ``nvdec_source.timeline``, frames as their YUV planes."""

    unsupported = ("vp9",)  # stands for what NVDEC cannot decode: these files go to the CPU workers

    def __init__(self, path: str) -> None:
        self.path = path
        with av.open(path) as container:
            codec = container.streams.video[0].codec_context.name
        if codec in self.unsupported:
            raise UseCpu(f"{codec} is not decoded here")
        self.facts: StreamFacts | None = None

    def scan(self) -> StreamFacts:
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            shown = [(p.pts, p.duration or 0) for p in container.demux(stream) if p.size and not p.is_discard]
            declared = container.duration / 1e6 if container.duration else 0.0
        line = nvdec_source.timeline(shown, stream.time_base)
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            first = next(container.decode(stream))
            sar, codec = stream.codec_context.sample_aspect_ratio, stream.codec_context.name
            fps = frame_rate(stream, default=0.0)
        self.facts = StreamFacts(
            codec, first.width, first.height, fps, line, declared,
            matrix={1: "bt709", 5: "bt601", 6: "bt601"}.get(int(first.colorspace or 2)),
            full_range=int(first.color_range or 0) == 2 or first.format.name.startswith("yuvj"),
            rotation=int(first.rotation or 0) % 360,
            sample_aspect=Fraction(sar) if sar else None,
        )  # fmt: skip
        return self.facts

    def frames(self):  # type: ignore[no-untyped-def]
        assert self.facts is not None
        with av.open(self.path) as container:
            for frame in container.decode(video=0):
                if frame.format.name not in ("yuv420p", "yuvj420p"):
                    raise UseCpu(f"{frame.format.name} frames")
                yield self.facts.timeline.index[frame.pts], planes_of(frame)

    def close(self) -> None:
        pass


def planes_of(frame: av.VideoFrame) -> nvdec_source.Planes:
    arrays = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in frame.planes]
    y, u, v = (torch.from_numpy(a.copy()) for a in arrays)
    return y, u, v


def fake_gpu_decode(path: str, known_hash, spec: DecodeSpec, device: torch.device):  # type: ignore[no-untyped-def]
    return nvdec_source.decode_on_device(path, known_hash, spec, device, PyAVPlanes)


def giving_up_after_a_chunk(path: str, known_hash, spec: DecodeSpec, device: torch.device):  # type: ignore[no-untyped-def]
    """The GPU path failing part-way through files named ``late*``: what it sent is voided."""
    for event in fake_gpu_decode(path, known_hash, spec, device):
        yield event
        if Path(path).name.startswith("late") and isinstance(event, DecodedChunk):
            raise UseCpu("gave up part-way")


# --- media ------------------------------------------------------------------------------------------------------


def scene(frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """A colour gradient with a coloured block moving across it: content in both chroma planes."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 // max(1, width - 1), ys * 255 // max(1, height - 1), np.full_like(xs, 90)], -1)
    out = np.repeat(base[None].astype(np.uint8), frames, 0)
    color = rng.integers(0, 256, 3)
    side = max(4, min(height, width) // 3)
    for i in range(frames):
        x = (width - side) * i // max(1, frames - 1)
        out[i, height // 3 : height // 3 + side, x : x + side] = color
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("nvdec") / "videos"
    # sizes a few times the encoder's 64 px, scaled down as real videos are (scaling up, libswscale's filters
    # and rounding differ more from torch's)
    write_video(folder / "small.mp4", scene(10, 144, 192, 1), fps=5)
    write_video(folder / "wide.mp4", scene(12, 180, 320, 2), fps=6)
    write_media(folder / "hd.mp4", scene(3, 720, 1280, 3), fps=3)  # untagged HD: BT.709
    write_media(folder / "phone.mp4", scene(8, 192, 288, 4), fps=4, rotation=-90)
    write_media(folder / "hdv.mp4", scene(8, 144, 216, 5), fps=4, sample_aspect_ratio=Fraction(4, 3))
    write_video(folder / "vfr.mp4", scene(8, 160, 192, 6), timestamps=[0.0, 0.1, 0.15, 0.5, 0.9, 1.6, 2.0, 3.1])
    write_video(folder / "long.mp4", scene(80, 144, 192, 7), fps=2)  # 40 s: 7 clips
    write_video(folder / "late_long.mp4", scene(80, 144, 192, 8), fps=2)
    write_video(folder / "other.webm", scene(10, 48, 64, 9), fps=5, codec="vp9")  # "unsupported": CPU
    (folder / "broken.mp4").write_bytes(b"not a video")
    return folder


def catalog_rows(settings) -> dict[str, tuple[Video, list[np.ndarray]]]:  # type: ignore[no-untyped-def]
    with make_sessionmaker(open_catalog(settings))() as session:
        rows = {}
        for video in session.scalars(select(Video)):
            clips = session.scalars(
                select(Clip).where(Clip.video_id == video.id).options(undefer(Clip.embedding)).order_by(Clip.position)
            )
            rows[Path(video.path).name] = (video, [clip.vector() for clip in clips])
        return rows


# --- the choice of decoder ----------------------------------------------------------------------------------------


def test_auto_chooses_cpu_here_and_says_why(tmp_path, corpus, tiny_checkpoint, tiny_encoder, caplog) -> None:  # noqa: F811
    settings = make_settings(tmp_path, tiny_checkpoint)
    with caplog.at_level(logging.INFO, logger="indexer.nvdec"):
        summary = run_ingest(settings, [corpus / "small.mp4"], tiny_encoder, decoder="auto")
    assert summary.indexed == 1
    assert catalog_rows(settings)["small.mp4"][0].decoder == "pyav"
    assert "decoder: cpu, chosen by auto: NVDEC is not used because the encoder runs on cpu" in caplog.text


def test_nvdec_is_refused_where_it_cannot_work_naming_the_cause(
    tmp_path,
    corpus,
    tiny_checkpoint,  # noqa: F811
    tiny_encoder,  # noqa: F811
    monkeypatch,
) -> None:
    settings = make_settings(tmp_path, tiny_checkpoint)
    with pytest.raises(IndexerError, match="--decoder nvdec cannot work here: the encoder runs on cpu, not a CUDA"):
        run_ingest(settings, [corpus / "small.mp4"], tiny_encoder, decoder="nvdec")
    with pytest.raises(IndexerError, match="expected one of auto, cpu, nvdec"):
        nvdec.choose_decoder("gpu", "cpu")
    env = {"TVR_DATA_DIR": str(tmp_path / "cli"), "TVR_CHECKPOINT": tiny_checkpoint, "TVR_DATABASE_URL": ""}
    result = CliRunner().invoke(app, ["ingest", str(corpus / "small.mp4")], env=env | {"TVR_DECODER": "nvdec"})
    assert result.exit_code == 1 and "--decoder nvdec cannot work here: the encoder runs on cpu" in result.output

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert nvdec.nvdec_unavailable("cuda") == "CUDA is not available"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # past CUDA: PyNvVideoCodec itself
    reason = nvdec.nvdec_unavailable("cuda")
    if importlib.util.find_spec("PyNvVideoCodec") is None:
        assert reason == "PyNvVideoCodec is not installed (pip install PyNvVideoCodec)"
    else:  # installed without a driver, as here: its import raises RuntimeError (libnvidia-encode.so.1)
        assert reason is not None and reason.startswith("PyNvVideoCodec fails to load: ")
    with pytest.raises(IndexerError, match="--decoder nvdec cannot work here: PyNvVideoCodec"):
        nvdec.choose_decoder("nvdec", "cuda:0")
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", None)
    assert nvdec.nvdec_unavailable("cuda") == "PyNvVideoCodec is not installed (pip install PyNvVideoCodec)"


# --- the GPU path, on CPU tensors ---------------------------------------------------------------------------------


def test_gpu_path_indexes_every_file_and_falls_back_per_file(
    tmp_path,
    corpus,
    tiny_checkpoint,  # noqa: F811
    tiny_encoder,  # noqa: F811
) -> None:
    cpu = make_settings(tmp_path / "cpu", tiny_checkpoint)
    run_ingest(cpu, [corpus], tiny_encoder, decoder="cpu", batch_size=4)
    gpu = make_settings(tmp_path / "gpu", tiny_checkpoint)
    summary = run_ingest(
        gpu, [corpus], tiny_encoder, decoder="nvdec", gpu_decode=giving_up_after_a_chunk, nvdec_sessions=3,
        batch_size=4, chunk_clips=3,
    )  # fmt: skip
    assert summary.indexed == 9 and [Path(p).name for p, _ in summary.failed] == ["broken.mp4"]
    expected, got = catalog_rows(cpu), catalog_rows(gpu)
    assert set(got) == set(expected)
    fallbacks = {"other.webm", "late_long.mp4"}  # unsupported; gave up after its first chunk
    for name, (video, vectors) in got.items():
        reference, reference_vectors = expected[name]
        assert video.status == reference.status and video.error == reference.error, name
        if video.status != VideoStatus.indexed:
            continue
        assert video.decoder == ("pyav" if name in fallbacks else "nvdec"), name
        facts = (video.duration, video.fps, video.width, video.height, video.codec)
        assert facts == (reference.duration, reference.fps, reference.width, reference.height, reference.codec), name
        assert len(vectors) == len(reference_vectors), name
        for ours, theirs in zip(vectors, reference_vectors, strict=True):
            assert float(ours @ theirs) >= 0.999, name
    assert len(got["long.mp4"][1]) == 7 and got["phone.mp4"][0].width == 192  # upright: 192 x 288


def test_frame_choice_is_the_cpu_readers_on_real_timestamps(corpus: Path, tmp_path: Path) -> None:
    write_media(tmp_path / "bframes.mp4", scene(40, 32, 32, 10), fps=Fraction(30000, 1001), bframes=3)
    for path in (corpus / "vfr.mp4", tmp_path / "bframes.mp4", corpus / "long.mp4", corpus / "other.webm"):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            shown = [(p.pts, p.duration or 0) for p in container.demux(stream) if p.size and not p.is_discard]
        line = nvdec_source.timeline(shown, stream.time_base)
        with VideoReader(path) as reader:
            assert line.duration == pytest.approx(reader.info.duration, abs=1e-6), path.name
            times = [-0.5, *np.linspace(0, line.duration + 1, 97), *line.times, *(t - 1e-3 for t in line.times[1:])]
            cpu_times = reader.sample(times, lambda _, frame: frame.time)
        ours = [line.times[k] for k in nvdec_source.shown_frames(line.times, times)]
        np.testing.assert_allclose(ours, cpu_times, atol=1e-6, err_msg=path.name)


@pytest.mark.parametrize("mode", ["shortest", "longest"])
def test_planes_become_the_cpu_paths_encoder_input(corpus: Path, mode: str) -> None:
    preprocess = FramePreprocess(64, resize_mode=mode, interpolation="bicubic" if mode == "shortest" else "bilinear")
    spec = DecodeSpec(num_frames=4, preprocess=preprocess)
    for name in ("small.mp4", "wide.mp4", "hd.mp4", "phone.mp4", "hdv.mp4"):
        source = PyAVPlanes(str(corpus / name))
        facts = source.scan()
        with av.open(str(corpus / name)) as container:
            frame = next(container.decode(video=0))
        cpu = AVFrame(frame, 0.0, facts.sample_aspect, facts.rotation)
        ours = nvdec_source.for_encoder(planes_of(frame), facts, spec).numpy().astype(int)
        theirs = cpu.for_encoder(preprocess).astype(int)
        assert ours.shape == theirs.shape == (3, 64, 64), name
        # libswscale's filters and rounding are not torch's; scaling HD frames down, as for real videos, they agree
        assert np.abs(ours - theirs).mean() < (0.2 if name == "hd.mp4" else 1.0), name
        jpeg = nvdec_source.thumbnail(planes_of(frame), facts, 40)
        with Image.open(io.BytesIO(jpeg)) as image:
            assert image.format == "JPEG" and image.size == cpu.thumbnail(40).shape[1::-1], name


def test_gpu_events_are_the_cpu_decoders(corpus: Path, tiny_encoder) -> None:  # noqa: F811
    spec = DecodeSpec(num_frames=tiny_encoder.num_frames, preprocess=tiny_encoder.preprocess, chunk_clips=3)
    path = str(corpus / "long.mp4")
    cpu = list(decode_video(path, None, spec))
    gpu = list(fake_gpu_decode(path, None, spec, torch.device("cpu")))
    assert [type(e) for e in gpu] == [type(e) for e in cpu] == [Probed, DecodedChunk, DecodedChunk, DecodedChunk]
    assert isinstance(cpu[0], Probed) and isinstance(gpu[0], Probed) and gpu[0].decoder == "nvdec"
    assert (gpu[0].windows, gpu[0].content_hash, gpu[0].fps) == (cpu[0].windows, cpu[0].content_hash, cpu[0].fps)
    for ours, theirs in zip(gpu[1:], cpu[1:], strict=True):
        assert isinstance(ours, DecodedChunk) and isinstance(theirs, DecodedChunk)
        for a, b in zip(ours.clips, theirs.clips, strict=True):
            assert (a.position, a.start, a.end) == (b.position, b.start, b.end)
            assert isinstance(a.frames, torch.Tensor) and a.frames.dtype == torch.uint8
            assert np.abs(a.frames.numpy().astype(int) - b.frames.astype(int)).mean() < 2.5
    unchanged = list(fake_gpu_decode(path, gpu[0].content_hash, spec, torch.device("cpu")))
    assert [(type(e), getattr(e, "status", "")) for e in unchanged] == [(Probed, "unchanged")]
    tensors, arrays = gpu[1].clips, cpu[1].clips  # type: ignore[union-attr]
    mixed = encode_clips(tiny_encoder, [arrays[0], *tensors[1:]])  # tensors stacked where they are
    np.testing.assert_allclose(mixed[1:], encode_clips(tiny_encoder, tensors)[1:], atol=1e-5)
    np.testing.assert_allclose(mixed[:1], encode_clips(tiny_encoder, arrays[:1]), atol=1e-5)


def test_the_pool_holds_few_events_until_they_are_read(corpus: Path) -> None:
    made = []
    lock = threading.Lock()

    def endless(path, known_hash, spec, device):  # type: ignore[no-untyped-def]
        for i in range(1000):
            with lock:
                made.append(i)
            yield DecodedChunk([])

    spec = DecodeSpec(num_frames=4, preprocess=FramePreprocess(64))
    pool: nvdec.GpuPool[str] = nvdec.GpuPool(2, spec, torch.device("cpu"), lambda: pytest.fail("no fallback"), endless)
    tasks = iter([Task(str(corpus / "small.mp4"), None, "a"), Task(str(corpus / "wide.mp4"), None, "b")])
    try:
        pool.fill(lambda: next(tasks, None))
        bound = 2 * 2 + 2  # the queue's places, and one event in each thread's hand
        for _ in range(200):
            if len(made) >= bound:
                break
            time.sleep(0.02)
        time.sleep(0.2)
        assert len(made) == bound and pool.busy
        messages = pool.poll(1.0)
        assert messages and all(m.kind == "event" for m in messages)
    finally:
        pool.close()


# --- PyNvVideoCodec's part, against a stand-in of its demuxer and decoder (its API as documented) ---------------


class FakePacket:  # PacketData: pts, duration, bsl (bytes), discardable
    def __init__(self, packet: av.Packet | None = None) -> None:
        self.packet, self.bsl, self.discardable = packet, packet.size if packet else 0, 0
        self.pts, self.duration = (packet.pts, packet.duration or 0) if packet else (0, 0)


class FakeFrame:  # DecodedFrame: NV12 in one surface (rows padded to 16), DLPack, getPTS, format
    format = "Pixel_Format.NV12"

    def __init__(self, frame: av.VideoFrame) -> None:
        y, u, v = planes_of(frame)
        rows = -(-y.shape[0] // 16) * 16
        surface = torch.zeros(rows + rows // 2, y.shape[1] + y.shape[1] % 2, dtype=torch.uint8)
        surface[: y.shape[0], : y.shape[1]] = y
        surface[rows : rows + u.shape[0], 0 : 2 * u.shape[1] : 2] = u
        surface[rows : rows + v.shape[0], 1 : 2 * v.shape[1] : 2] = v
        self.surface, self.pts = surface, frame.pts

    def getPTS(self) -> int:
        return self.pts

    def __dlpack__(self, stream=None):  # type: ignore[no-untyped-def]
        return self.surface.__dlpack__()

    def __dlpack_device__(self):  # type: ignore[no-untyped-def]
        return self.surface.__dlpack_device__()


class FakeDemuxer:
    def __init__(self, filename: str) -> None:
        self.container = av.open(filename)
        self.stream = self.container.streams.video[0]
        self.rate = float(self.stream.average_rate or 0)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (FakePacket(p) for p in self.container.demux(self.stream) if p.size)

    def GetNvCodecId(self) -> str:  # noqa: N802 (PyNvVideoCodec's names)
        return "cudaVideoCodec." + {"h264": "H264", "vp9": "VP9"}[self.stream.codec_context.name]

    def BitDepth(self) -> int:  # noqa: N802
        return 8

    def ChromaFormat(self) -> str:  # noqa: N802
        return "cudaVideoChromaFormat.YUV420"

    def GetTimebaseNum(self) -> int:  # noqa: N802
        return self.stream.time_base.numerator

    def GetTimebaseDen(self) -> int:  # noqa: N802
        return self.stream.time_base.denominator

    def FrameRate(self) -> float:  # noqa: N802
        return self.rate

    def RFrameRate(self) -> float:  # noqa: N802
        return float(self.stream.guessed_rate or 0)

    def ColorSpace(self) -> str:  # noqa: N802
        return "ColorSpace.UNSPEC"

    def ColorRange(self) -> str:  # noqa: N802
        return "ColorRange.MPEG"

    def Width(self) -> int:  # noqa: N802
        return self.stream.codec_context.width

    def Height(self) -> int:  # noqa: N802
        return self.stream.codec_context.height


class FakeDecoder:
    stream: av.video.stream.VideoStream | None = None

    def Decode(self, packet: FakePacket) -> list[FakeFrame]:  # noqa: N802
        if packet.packet is not None:
            self.stream = packet.packet.stream
            return [FakeFrame(f) for f in packet.packet.decode()]
        assert self.stream is not None
        return [FakeFrame(f) for f in self.stream.codec_context.decode(None)]  # flushed once, then empty


def test_the_pynvvideocodec_source_gives_the_cpu_paths_frames(corpus: Path, tiny_encoder, monkeypatch) -> None:  # noqa: F811
    fake = types.SimpleNamespace(
        CreateDemuxer=FakeDemuxer, CreateDecoder=lambda **_: FakeDecoder(), PacketData=FakePacket
    )
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", fake)
    if importlib.util.find_spec("cv2") is None:  # OpenCV reads rotation and pixel aspect: PyAV's reading instead
        monkeypatch.setattr(nvdec_source, "display_metadata", lambda path: pyav_display_metadata(path))
    spec = DecodeSpec(num_frames=tiny_encoder.num_frames, preprocess=tiny_encoder.preprocess, chunk_clips=3)
    for name in ("long.mp4", "vfr.mp4", "phone.mp4", "hdv.mp4", "wide.mp4"):
        path = str(corpus / name)
        gpu = list(nvdec.decode_video_nvdec(path, None, spec, torch.device("cpu")))
        cpu = list(decode_video(path, None, spec))
        assert isinstance(gpu[0], Probed) and isinstance(cpu[0], Probed) and gpu[0].decoder == "nvdec"
        for key in ("duration", "fps", "width", "height", "codec", "windows"):
            assert getattr(gpu[0], key) == pytest.approx(getattr(cpu[0], key)), (name, key)
        ours = [c.frames for e in gpu[1:] for c in e.clips]  # type: ignore[union-attr]
        theirs = [c.frames for e in cpu[1:] for c in e.clips]  # type: ignore[union-attr]
        assert len(ours) == len(theirs) == len(cpu[0].windows)
        for a, b in zip(ours, theirs, strict=True):
            assert np.abs(a.numpy().astype(int) - b.astype(int)).mean() < 1.0, name
    monkeypatch.delitem(nvdec_source.NVDEC_CODECS, "VP9")  # as if NVDEC could not decode VP9
    with pytest.raises(UseCpu, match="VP9 8-bit YUV420: NVDEC decodes H264, HEVC, AV1, VP8, MPEG2 8-bit 4:2:0 here"):
        nvdec_source.NvdecSource(str(corpus / "other.webm"), torch.device("cpu"))


def pyav_display_metadata(path: str) -> tuple[int, Fraction | None, float]:
    with VideoReader(path) as reader:
        return reader.info.rotation, reader.info.sample_aspect, reader.info.duration


def test_opencv_reads_rotation_and_pixel_aspect_as_pyav_does(corpus: Path, tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    frames = scene(4, 48, 64, 11)
    for rotation in (90, 180, -90):
        write_media(tmp_path / f"turned{rotation}.mp4", frames, fps=4, rotation=rotation)
    paths = [*tmp_path.glob("turned*.mp4"), corpus / "phone.mp4", corpus / "hdv.mp4", corpus / "small.mp4"]
    for path in paths:
        rotation, sample_aspect, declared = nvdec_source.display_metadata(str(path))
        with VideoReader(path) as reader:
            assert rotation == reader.info.rotation, path.name
            assert (sample_aspect or 1) == (reader.info.sample_aspect or 1), path.name
            assert declared == pytest.approx(reader.info.duration, abs=0.01), path.name
