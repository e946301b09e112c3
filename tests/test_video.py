"""Video reading: real files in several codecs, variable frame rates, long videos and broken files."""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media import write_video

from model.video import VideoReader, VideoReadError, available_backends, probe_video, read_clip, sample_times

BACKENDS = available_backends()
needs_decord = pytest.mark.skipif("decord" not in BACKENDS, reason="decord is not installed")
FORMATS = [("h264", ".mp4"), ("vp9", ".webm"), ("mjpeg", ".avi")]


def indexed_frames(count: int, height: int = 32, width: int = 32) -> np.ndarray:
    """Frames of one flat colour each, the colour spelling the frame's index (robust to lossy coding)."""
    frames = np.empty((count, height, width, 3), np.uint8)
    for i in range(count):
        frames[i] = (i % 8 * 32 + 16, i // 8 % 8 * 32 + 16, i // 64 % 8 * 32 + 16)
    return frames


def index_of(frame: np.ndarray) -> int:
    r, g, b = (int(round((frame[..., c].mean() - 16) / 32)) for c in range(3))
    return r + 8 * g + 64 * b


def indices(frames: np.ndarray) -> list[int]:
    return [index_of(f) for f in frames]


def test_sample_times_uniform_takes_segment_centres() -> None:
    assert sample_times(0.0, 12.0, 4) == pytest.approx([1.5, 4.5, 7.5, 10.5])
    assert sample_times(2.0, 3.0, 2) == pytest.approx([2.25, 2.75])
    assert sample_times(5.0, 5.0, 3) == [5.0, 5.0, 5.0]


def test_sample_times_fps1_keeps_the_first_seconds_and_pads_by_repeating() -> None:
    assert sample_times(2.0, 30.0, 4, mode="fps1") == [2.0, 3.0, 4.0, 5.0]  # the first 4 of 28
    assert sample_times(0.0, 3.0, 3, mode="fps1") == [0.0, 1.0, 2.0]  # 3.0 is not before the end
    # a 3-second clip padded to 12 frames: each second repeated in place, no missing or zero frames
    assert sample_times(0.0, 2.5, 12, mode="fps1") == [0.0] * 4 + [1.0] * 4 + [2.0] * 4
    assert sample_times(1.0, 3.0, 5, mode="fps1") == [1.0, 1.0, 1.0, 2.0, 2.0]
    assert sample_times(4.0, 4.0, 2, mode="fps1") == [4.0, 4.0]


@pytest.mark.parametrize(
    ("args", "message"),
    [((0.0, 1.0, 0, "uniform"), "num_frames"), ((2.0, 1.0, 4, "uniform"), "start <= end"), ((0, 1, 4, "x"), "mode")],
)
def test_sample_times_rejects_bad_arguments(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample_times(*args)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("codec", "suffix"), FORMATS)
def test_each_format_gives_the_frame_shown_at_each_time(tmp_path: Path, codec: str, suffix: str, backend: str) -> None:
    path = write_video(tmp_path / f"v{suffix}", indexed_frames(30), fps=10, codec=codec)
    with VideoReader(path, backend=backend) as reader:
        assert reader.backend == backend
        info = reader.info
        assert (info.width, info.height, info.num_frames, info.codec) == (32, 32, 30, codec)
        assert info.fps == pytest.approx(10.0) and info.duration == pytest.approx(3.0, abs=0.11)
        # any order, repeats, exact timestamps, before the start and past the end
        times = [2.95, 0.0, 0.3, 0.29, 1.0, -1.0, 0.3, 99.0, 1.55]
        assert indices(reader.frames_at(times)) == [29, 0, 3, 2, 10, 0, 3, 29, 15]
        assert reader.frames_at([]).shape == (0, 32, 32, 3)
    assert probe_video(path, backend=backend) == info


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("width", "height", "codec", "suffix"), [(63, 47, "h264", ".mp4"), (90, 34, "mjpeg", ".avi")])
def test_odd_sizes_keep_their_pixels_in_place(tmp_path: Path, width: int, height: int, codec, suffix, backend) -> None:
    y, x = np.mgrid[0:height, 0:width]
    frames = np.zeros((4, height, width, 3), np.uint8)
    frames[..., 0] = x * 255 // width  # horizontal ramp in red, vertical in green: catches stride or flips
    frames[..., 1] = y * 255 // height
    path = write_video(tmp_path / f"odd{suffix}", frames, fps=5, codec=codec)
    even_w, even_h = width + width % 2, height + height % 2  # tests/media.py pads to even sizes
    got = read_clip(path, 0, 0.8, 4, backend=backend)
    assert got.shape == (4, even_h, even_w, 3) and got.dtype == np.uint8
    diff = np.abs(got[:, :height, :width, :2].astype(int) - frames[..., :2]).mean()
    assert diff < 4, f"decoded frames differ from the written ones by {diff:.1f} on average"


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_frame_video_fills_every_sample(tmp_path: Path, backend: str) -> None:
    path = write_video(tmp_path / "one.mp4", indexed_frames(1), fps=10)
    info = probe_video(path, backend=backend)
    assert info.num_frames == 1
    frames = read_clip(path, 0.0, math.inf, 12, backend=backend)
    assert frames.shape == (12, 32, 32, 3) and indices(frames) == [0] * 12
    assert indices(read_clip(path, 0.0, 5.0, 12, mode="fps1", backend=backend)) == [0] * 12


# Frame times on the 0.1 s grid the encoder keeps, with gaps up to 1.5 s: index / fps would be wrong.
VFR_TIMES = [0.0, 0.1, 0.2, 0.5, 1.2, 1.3, 2.0, 3.5, 3.6, 5.0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("codec", "suffix"), [("h264", ".mp4"), ("vp9", ".webm")])
def test_variable_frame_rate_maps_times_by_timestamps(tmp_path: Path, codec: str, suffix: str, backend: str) -> None:
    path = write_video(tmp_path / f"vfr{suffix}", indexed_frames(10), fps=10, codec=codec, timestamps=VFR_TIMES)
    times = [0.05, 0.45, 0.5, 1.0, 1.25, 1.9, 2.5, 3.49, 3.55, 4.99, 5.0]
    expected = [int(np.searchsorted(VFR_TIMES, t + 1e-9, side="right")) - 1 for t in times]
    assert expected == [0, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9]
    with VideoReader(path, backend=backend) as reader:
        assert indices(reader.frames_at(times)) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_times_count_from_the_first_frame(tmp_path: Path, backend: str) -> None:
    stamps = [1.0 + i / 10 for i in range(10)]  # the stream starts at 1 s
    path = write_video(tmp_path / "late.webm", indexed_frames(10), fps=10, codec="vp9", timestamps=stamps)
    with VideoReader(path, backend=backend) as reader:
        assert reader.info.duration == pytest.approx(1.0, abs=0.11)
        assert indices(reader.frames_at([0.0, 0.55, 0.9])) == [0, 5, 9]


@needs_decord
@pytest.mark.parametrize(("codec", "suffix"), [*FORMATS, ("h264", ".mkv")])
def test_backends_agree(tmp_path: Path, codec: str, suffix: str) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (20, 48, 64, 3), dtype=np.uint8)
    frames = np.repeat(np.repeat(frames[:, ::8, ::8], 8, axis=1), 8, axis=2)  # 8-pixel blocks: real content
    path = write_video(tmp_path / f"agree{suffix}", frames, fps=10, codec=codec)
    times = sample_times(0.0, 2.0, 12) + [0.0, 1.9, 0.7]
    by_decord = read_clip(path, 0.0, 2.0, 12, backend="decord")
    by_pyav = read_clip(path, 0.0, 2.0, 12, backend="pyav")
    assert np.abs(by_decord.astype(int) - by_pyav).mean() < 2
    with VideoReader(path, backend="decord") as a, VideoReader(path, backend="pyav") as b:
        assert a.backend == "decord" and b.backend == "pyav"
        assert np.abs(a.frames_at(times).astype(int) - b.frames_at(times)).mean() < 2
        assert a.info.duration == pytest.approx(b.info.duration) and a.info.codec == b.info.codec


def test_long_video_is_decoded_once_and_seeks_over_gaps(tmp_path: Path) -> None:
    count = 500  # 50 s at 10 fps; x264 puts a keyframe every 25 s
    path = write_video(tmp_path / "long.mp4", indexed_frames(count, 16, 16), fps=10)
    rng = np.random.default_rng(1)
    times = rng.uniform(0, 50, 200)
    expected = [min(int(t * 10 + 1e-6), count - 1) for t in times]
    with VideoReader(path, backend="pyav") as reader:
        start = reader.decoded_frames
        assert indices(reader.frames_at(times)) == expected  # shuffled times: one sorted forward pass
        assert reader.decoded_frames - start <= count
        start = reader.decoded_frames
        assert indices(reader.frames_at([47.0, 1.0])) == [470, 10]  # seeks back to the start, then forward
        assert reader.decoded_frames - start < 300  # 1 s, then from the keyframe at or before 47 s, not 470
        reader.frames_at([9.95])
        start = reader.decoded_frames
        for t in (10.0, 10.5, 11.0, 11.5):  # increasing times over several calls continue the same pass
            assert index_of(reader.frames_at([t])[0]) == int(t * 10)
        assert reader.decoded_frames - start <= 16


def test_unknown_backend_is_refused(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", indexed_frames(3), fps=10)
    with pytest.raises(ValueError, match="unknown video backend 'ffmpeg'"):
        VideoReader(path, backend="ffmpeg")


@needs_decord
def test_decord_failures_fall_back_to_pyav(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import decord

    path = write_video(tmp_path / "v.mp4", indexed_frames(10), fps=10)

    def broken_open(*args: object, **kwargs: object) -> None:
        raise decord.DECORDError("simulated crash")

    with caplog.at_level(logging.DEBUG, logger="model.video"):
        monkeypatch.setattr(decord, "VideoReader", broken_open)
        with VideoReader(path, backend="decord") as reader:
            assert reader.backend == "pyav"
            assert indices(reader.frames_at([0.35])) == [3]
    assert "decord cannot open it" in caplog.text and "simulated crash" in caplog.text
    monkeypatch.undo()

    class BrokenBatch:
        def __init__(self, real: object) -> None:
            self.real = real

        def __len__(self) -> int:
            return len(self.real)

        def get_frame_timestamp(self, index: object) -> object:
            return self.real.get_frame_timestamp(index)

        def get_batch(self, index: object) -> None:
            raise decord.DECORDError("simulated read failure")

    real_reader = decord.VideoReader
    monkeypatch.setattr(decord, "VideoReader", lambda *a, **k: BrokenBatch(real_reader(*a, **k)))
    with VideoReader(path, backend="decord") as reader:
        assert reader.backend == "decord"
        assert indices(reader.frames_at([0.0, 0.95])) == [0, 9]
        assert reader.backend == "pyav"


# ------------------------------------------------------------------------------------------ broken files


def _good_bytes(tmp_path: Path, suffix: str, codec: str) -> bytes:
    return write_video(tmp_path / f"good{suffix}", indexed_frames(60), fps=10, codec=codec).read_bytes()


def _noise(size: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def _header_only(path: Path, codec: str) -> None:
    """A container with a video stream and not a single frame."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 8000, 0, Fraction(1, 8000)
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def make_bad_file(kind: str, tmp_path: Path) -> Path:
    """A file of the broken ``kind``; returns its path."""
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "not_a_video":
        path.write_text("this is a text file that claims to be a video\n" * 20)
    elif kind == "noise":
        path.write_bytes(_noise(20000))
    elif kind == "corrupt_header":
        data = bytearray(_good_bytes(tmp_path, ".mp4", "h264"))
        data[:64] = _noise(64)
        path.write_bytes(bytes(data))
    elif kind == "truncated_mp4":  # the index (moov) is written last: cut off
        data = _good_bytes(tmp_path, ".mp4", "h264")
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_webm":  # readable up to the cut; asking past it must not pass silently
        path = path.with_suffix(".webm")
        data = _good_bytes(tmp_path, ".webm", "vp9")
        path.write_bytes(data[: int(len(data) * 0.6)])
    elif kind == "corrupt_stream":  # garbage in the middle of the frames
        path = path.with_suffix(".webm")
        data = bytearray(_good_bytes(tmp_path, ".webm", "vp9"))
        data[len(data) // 2 : len(data) // 2 + 3000] = _noise(3000, seed=1)
        path.write_bytes(bytes(data))
    elif kind == "zero_frames_avi":
        path = path.with_suffix(".avi")
        _header_only(path, "libx264")
    elif kind == "zero_frames_mkv":
        path = path.with_suffix(".mkv")
        _header_only(path, "libx264")
    elif kind == "audio_only":
        path = path.with_suffix(".wav")
        _audio_only(path)
    elif kind == "unknown_codec":  # a Matroska track whose codec no decoder knows
        path = path.with_suffix(".mkv")
        data = write_video(tmp_path / "good.mkv", indexed_frames(5), fps=10).read_bytes()
        path.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ"))
    elif kind == "directory":
        path.mkdir()
    elif kind != "missing":
        raise AssertionError(kind)
    return path


BAD_FILES = {
    "empty": "empty",
    "not_a_video": "not a video file",
    "noise": "not a video file",
    "corrupt_header": "corrupt",
    "truncated_mp4": "truncated",
    "truncated_webm": "truncated",
    "corrupt_stream": "corrupt",
    "zero_frames_avi": "no decodable frames",
    "zero_frames_mkv": "no frames",
    "audio_only": "no video stream",
    "unknown_codec": "unsupported video codec",
    "directory": "directory",
    "missing": "not found",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_files_raise_video_read_error_naming_file_and_cause(tmp_path: Path, kind: str, backend: str) -> None:
    path = make_bad_file(kind, tmp_path)
    with pytest.raises(VideoReadError) as caught:
        read_clip(path, 0.0, 6.0, 12, backend=backend)
    message = str(caught.value)
    assert str(path) in message and BAD_FILES[kind] in message, message
    assert caught.value.path == str(path)
    assert caught.value.__cause__ is None  # no raw av / decord exception chained on


def test_closed_reader_refuses_to_read(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", indexed_frames(3), fps=10)
    reader = VideoReader(path)
    reader.close()
    reader.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        reader.frames_at([0.0])


# ---------------------------------------------------------------------------- decoding only what is shown


def textured_indexed_frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``indexed_frames`` with noise on top, so that x264 codes B-frames between them."""
    noise = np.random.default_rng(seed).integers(-12, 12, (height, width, 3))
    return np.clip(indexed_frames(count, height, width).astype(np.int16) + noise, 0, 255).astype(np.uint8)


def test_frames_the_decoder_skips_are_never_the_frames_shown(tmp_path: Path) -> None:
    from model.media import write_video as write

    path = tmp_path / "b.mp4"
    write(path, textured_indexed_frames(120, 64, 96), fps=30, gop=60, bframes=3, preset="veryfast")
    dense = np.concatenate([(np.arange(120) + 0.5) / 30, np.random.default_rng(2).uniform(0, 4.2, 100)])
    with VideoReader(path) as reader:
        assert indices(reader.frames_at(dense)) == [min(int(t * 30 + 1e-6), 119) for t in dense]
        assert reader.decoded_frames == 120  # every frame is shown at some time asked for
    sparse = np.arange(0.0, 4.0, 0.83)  # what clips sample: one frame in 25
    with VideoReader(path) as reader:
        assert indices(reader.frames_at(sparse)) == [int(t * 30 + 1e-6) for t in sparse]
        assert reader.decoded_frames is not None and reader.decoded_frames < 110  # B-frames no one shows


def test_stretches_without_a_time_asked_for_are_skipped_by_seeking(tmp_path: Path) -> None:
    from model.media import write_video as write

    path = tmp_path / "gop.mp4"
    write(path, textured_indexed_frames(600, 32, 48), fps=30, gop=30, preset="veryfast")  # a keyframe a second
    times = [0.5, 10.5, 19.5, 19.9]
    with VideoReader(path) as reader:
        assert indices(reader.frames_at(times)) == [int(t * 30 + 1e-6) % 512 for t in times]  # indices wrap
        assert reader.decoded_frames is not None and reader.decoded_frames < 150  # of 600


def test_frames_come_upright_at_their_display_aspect(tmp_path: Path) -> None:
    from fractions import Fraction as F

    from model.media import write_video as write
    from model.preprocess import FramePreprocess

    band = np.full((4, 32, 64, 3), 90, np.uint8)
    band[:, :, :16] = (230, 30, 30)  # a red band on the left of landscape frames
    write(tmp_path / "phone.mp4", band, fps=10, rotation=90)  # shown turned 90 degrees counterclockwise
    write(tmp_path / "hdv.mp4", band, fps=10, sample_aspect_ratio=F(4, 3))
    with VideoReader(tmp_path / "phone.mp4") as reader:
        assert (reader.info.width, reader.info.height, reader.info.rotation) == (32, 64, 90)
        (frame,) = reader.frames_at([0.0])
        assert frame.shape == (64, 32, 3) and frame[-8:, :, 0].mean() > 200 and frame[:8, :, 0].mean() < 120
        (small,) = reader.sample([0.0], lambda _, f: f.for_encoder(FramePreprocess(16, resize_mode="squash")))
        assert small.shape == (3, 16, 16) and small[0, -3:].mean() > 200 and small[0, :3].mean() < 120
    for backend in BACKENDS:
        with VideoReader(tmp_path / "hdv.mp4", backend=backend) as reader:
            assert (reader.info.width, reader.info.height, reader.info.sample_aspect) == (85, 32, F(4, 3))
            assert reader.frames_at([0.0]).shape == (1, 32, 85, 3)


def test_ten_bit_video_decodes_to_the_right_colours(tmp_path: Path) -> None:
    from model.media import write_video as write

    colour = (200, 120, 40)
    write(tmp_path / "ten.mp4", np.full((3, 32, 32, 3), colour, np.uint8), fps=10, pix_fmt="yuv420p10le")
    with VideoReader(tmp_path / "ten.mp4") as reader:
        assert reader.info.pixel_format == "yuv420p10le"
        (frame,) = reader.frames_at([0.1])
        assert np.abs(frame.reshape(-1, 3).mean(0) - colour).max() < 4


@pytest.mark.parametrize(
    ("colorspace", "height", "width"),
    [("bt709", 720, 1280), ("bt709", 64, 96), ("bt601", 64, 96), (None, 64, 96)],
)
def test_the_colour_matrix_a_file_is_tagged_with_is_the_one_it_is_read_with(
    tmp_path: Path, colorspace: str | None, height: int, width: int
) -> None:
    """BT.709 and BT.601 give visibly different RGB for the same YUV: a reader that ignored the tag would be
    several levels off on this colour. Untagged small frames are BT.601 by convention."""
    from model.media import write_video as write
    from model.preprocess import FramePreprocess

    colour = (200, 60, 30)
    path = tmp_path / "c.mp4"
    write(path, np.full((2, height, width, 3), colour, np.uint8), fps=10, colorspace=colorspace)
    for backend in BACKENDS if colorspace is None else ["pyav"]:
        with VideoReader(path, backend=backend) as reader:
            (frame,) = reader.frames_at([0.0])
            (small,) = reader.sample([0.0], lambda _, f: f.for_encoder(FramePreprocess(32)))
        assert np.abs(frame.reshape(-1, 3).mean(0) - colour).max() < 4, backend
        assert np.abs(small.reshape(3, -1).mean(1) - colour).max() < 4, backend
