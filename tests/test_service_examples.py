"""Search by example (service/examples.py): images and short videos encoded in the examples' child process.

Real files throughout: synthetic scenes and moving squares written as H.264, ingested by the real pipeline,
and images cut from their frames. Tests that hold the child busy use its test hook (``TVR_EXAMPLES_TEST_GATE``).
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from indexer_fixtures import colored, make_settings, run_ingest, tiny_checkpoint, tiny_encoder  # noqa: F401
from media import write_video
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import undefer

from indexer.catalog import Clip, Video
from indexer.clips import ClipPolicy
from indexer.db import make_sessionmaker, open_catalog
from model.video import VideoReader
from service.example_media import ExampleRejected
from service.examples import TEST_GATE_ENV, ExampleEncoder, read_upload, save_upload
from service.settings import ServiceSettings

pytestmark = pytest.mark.slow  # each encoder starts a process that loads a checkpoint


def examples(checkpoint: str, tmp_path: Path, **limits: float) -> ExampleEncoder:
    settings = ServiceSettings(data_dir=tmp_path / "data", checkpoint=checkpoint, database_url="", **limits)
    return ExampleEncoder(settings)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def image_bytes(rgb: np.ndarray, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def ingested_clips(settings) -> dict[str, list[Clip]]:  # type: ignore[no-untyped-def]
    """Each ingested video's file name -> its clips in time order, with their embeddings."""
    with make_sessionmaker(open_catalog(settings))() as session:
        rows = session.execute(
            select(Video.path, Clip).join(Clip, Clip.video_id == Video.id).options(undefer(Clip.embedding))
        ).all()
    clips: dict[str, list[Clip]] = {}
    for path, clip in rows:
        clips.setdefault(Path(path).name, []).append(clip)
    return {name: sorted(found, key=lambda c: c.position) for name, found in clips.items()}


def mean_unit(vectors: list[np.ndarray]) -> np.ndarray:
    mean = np.mean(np.stack(vectors).astype(np.float64), axis=0)
    return mean / np.linalg.norm(mean)


@pytest.fixture(scope="module")
def tiny_examples(tiny_checkpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleEncoder]:  # noqa: F811
    encoder = examples(tiny_checkpoint, tmp_path_factory.mktemp("examples"))
    run(encoder.start())
    yield encoder
    run(encoder.close())


@pytest.fixture
def gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The child's test hook: it waits in this folder until ``open`` exists (children started from now on)."""
    folder = tmp_path / "gate"
    folder.mkdir()
    monkeypatch.setenv(TEST_GATE_ENV, str(folder))
    return folder


async def entered(gate: Path) -> None:
    """Until the child holds an example at the gate."""
    deadline = time.monotonic() + 300  # only against a hang: loading the encoder takes seconds
    while not (gate / "entered").exists():
        assert time.monotonic() < deadline, "the child never reached the gate"
        await asyncio.sleep(0.02)


# --- (a) an image cut from a frame finds its clip ---------------------------------------------------------


SCENES = [  # distinct colours, shapes and backgrounds
    ("red", "circle", "black"),
    ("green", "square", "gray"),
    ("blue", "triangle", "purple"),
    ("yellow", "circle", "purple"),
    ("white", "square", "black"),
]


def write_scenes(folder: Path, still: bool = False) -> list[Path]:
    """2-second synthetic scenes of 128 px (``still``: the frame at 1.5 s held, 128x96)."""
    from model.train.synth import FPS, Scene, render_scene

    paths = []
    for i, (colour, shape, background) in enumerate(SCENES):
        scene = Scene(colour, shape, "moves to the right", None, "large", "slowly", background)
        frames = render_scene(scene, 128, np.random.default_rng(i))
        if still:
            frames = np.repeat(frames[None, int(1.5 * FPS), 16:112], len(frames), axis=0)
        paths.append(write_video(folder / f"scene{i}.mp4", frames, fps=FPS))
    return paths


def images_of_frames(paths: list[Path], time_s: float) -> dict[tuple[str, str], bytes]:
    """(file name, format) -> the frame shown at ``time_s`` as a JPEG, PNG and WebP file."""
    images = {}
    for path in paths:
        with VideoReader(path) as reader:
            frame = reader.frames_at([time_s])[0]
        for fmt in ("JPEG", "PNG", "WEBP"):
            images[path.name, fmt] = image_bytes(frame, fmt)
    return images


def encode_images(encoder: ExampleEncoder, images: dict[tuple[str, str], bytes]) -> dict[tuple[str, str], np.ndarray]:
    async def main() -> dict[tuple[str, str], np.ndarray]:
        await encoder.start()
        try:
            return {key: await encoder.encode_image(data) for key, data in images.items()}
        finally:
            await encoder.close()

    return run(main())


def test_an_image_cut_from_a_video_frame_finds_the_clip_holding_it(tmp_path: Path) -> None:
    import torch

    from model import create_model, load_encoder, save_checkpoint

    torch.manual_seed(0)  # a tiny random encoder, always the same one
    checkpoint = str(save_checkpoint(create_model("tiny"), tmp_path / "tiny"))
    paths = write_scenes(tmp_path / "videos")
    settings = make_settings(tmp_path, checkpoint)
    one_second = ClipPolicy(single_max=1.0, window=1.0, stride=1.0)  # 2 s videos: clips (0, 1) and (1, 2)
    run_ingest(settings, paths, load_encoder(checkpoint), policy=one_second)
    clips = ingested_clips(settings)
    assert all([(c.start, c.end) for c in found] == [(0.0, 1.0), (1.0, 2.0)] for found in clips.values())

    found = encode_images(examples(checkpoint, tmp_path), images_of_frames(paths, 1.5))
    assert len(found) == 15
    for (name, fmt), vector in found.items():
        assert vector.dtype == np.float32 and vector.shape == (64,)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
        own = float(clips[name][1].vector() @ vector)  # the clip holding 1.5 s
        others = max(float(c.vector() @ vector) for other, cs in clips.items() if other != name for c in cs)
        assert own > 0.98 and own > others, (name, fmt, own, others)


def test_an_image_embeds_as_a_video_of_that_frame_held_still_is_ingested(tmp_path: Path) -> None:
    """With the trained demo model: the image's pixels are resized and cropped as ingestion resizes frames."""
    from model import load_encoder

    paths = write_scenes(tmp_path / "videos", still=True)  # 128x96: the crop matters
    settings = make_settings(tmp_path, "demo")
    run_ingest(settings, paths, load_encoder("demo"))
    clips = {name: found[0].vector() for name, found in ingested_clips(settings).items()}

    found = encode_images(examples("demo", tmp_path), images_of_frames(paths, 1.0))
    for (name, fmt), vector in found.items():
        own = float(clips[name] @ vector)
        others = max(float(clip @ vector) for other, clip in clips.items() if other != name)
        # not 1: the video's frames went through 4:2:0 chroma (coloured edges blur) and a decoder's scaler
        assert own > 0.93 and own > others + 0.2, (name, fmt, own, others)


# --- (b) a video embeds as ingestion embeds it ------------------------------------------------------------


def test_an_uploaded_video_embeds_as_the_mean_of_its_ingested_clips(
    tmp_path: Path,
    tiny_examples: ExampleEncoder,
    tiny_checkpoint: str,  # noqa: F811
    tiny_encoder,  # noqa: F811
) -> None:
    folder = tmp_path / "videos"
    write_video(folder / "long.mp4", colored(80, 32, 1), fps=2)  # 40 s: 7 windows of 10 s
    write_video(folder / "short.mp4", colored(10, 48, 2)[:, :, :40], fps=5)  # 2 s, 40x48: one clip
    settings = make_settings(tmp_path, tiny_checkpoint)
    run_ingest(settings, [folder], tiny_encoder)  # the pipeline's defaults
    clips = ingested_clips(settings)
    assert len(clips["long.mp4"]) == 7 and len(clips["short.mp4"]) == 1

    for name in ("long.mp4", "short.mp4"):
        vector = run(tiny_examples.encode_video(folder / name))
        assert vector.dtype == np.float32 and vector.shape == (64,)
        expected = mean_unit([clip.vector() for clip in clips[name]])
        np.testing.assert_allclose(vector, expected, atol=1e-5, err_msg=name)


def test_exif_orientation_is_applied(tmp_path: Path, tiny_examples: ExampleEncoder) -> None:
    upright = colored(1, 48, 3)[0, :, :30]  # 30x48, not symmetric
    stored = np.ascontiguousarray(np.rot90(upright))  # turned a quarter counterclockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn a quarter clockwise to display
    as_shot = image_bytes(stored, "PNG", exif=exif.tobytes())

    straight = run(tiny_examples.encode_image(image_bytes(upright, "PNG")))
    turned = run(tiny_examples.encode_image(as_shot))
    np.testing.assert_allclose(turned, straight, atol=1e-6)


# --- (c) bad inputs --------------------------------------------------------------------------------------


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels, with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + data + chunk(b"IEND", b"")


def bad_image(kind: str) -> bytes:
    frame = colored(1, 64, 4)[0]
    if kind == "truncated JPEG":  # noise: most of the file is image data, past the header
        jpeg = image_bytes(np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8), "JPEG")
        return jpeg[: len(jpeg) // 2]
    if kind == "JPEG of random bytes":
        return b"\xff\xd8\xff" + np.random.default_rng(0).bytes(4000)
    if kind == "text":
        return b"a caption, not an image\n" * 10
    if kind == "GIF":
        return image_bytes(frame, "GIF")
    if kind == "50000x50000 PNG":
        return png_declaring(50_000, 50_000)
    if kind == "empty":
        return b""
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "status", "words"),
    [
        ("truncated JPEG", 422, "corrupt JPEG image: it cannot be decoded"),
        ("JPEG of random bytes", 422, "corrupt JPEG image"),
        ("text", 415, "expected a JPEG, PNG or WebP image"),
        ("GIF", 415, "a GIF image is not supported: expected a JPEG, PNG or WebP"),
        ("50000x50000 PNG", 422, "50000x50000 pixels (2500 megapixels): expected at most 40 megapixels"),
        ("empty", 422, "the image is empty (0 bytes)"),
    ],
)
def test_a_bad_image_is_refused_naming_the_problem(
    tiny_examples: ExampleEncoder, kind: str, status: int, words: str
) -> None:
    with pytest.raises(ExampleRejected) as caught:
        run(tiny_examples.encode_image(bad_image(kind)))
    assert caught.value.status_code == status and words in caught.value.detail, caught.value.detail


def bad_video(kind: str, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"{kind.replace(' ', '_')}.mp4"
    if kind == "too long":
        return write_video(path, colored(70, 32, 5), fps=1)  # 70 s
    if kind == "text":
        path.write_text("a caption, not a video\n" * 10)
    elif kind == "image":
        path.write_bytes(image_bytes(colored(1, 32, 6)[0], "JPEG"))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        whole = write_video(folder / "whole.webm", colored(100, 32, 8), fps=5, codec="vp9").read_bytes()
        path = folder / "truncated.webm"
        path.write_bytes(whole[: len(whole) // 2])
    return path


@pytest.mark.parametrize(
    ("kind", "status", "words"),
    [
        ("too long", 422, "the video lasts 70.0 s: expected at most 60 s"),
        ("text", 415, "not a video that can be decoded"),
        ("image", 415, "a JPEG image, not a video"),
        ("empty", 422, "the video is empty (0 bytes)"),
        ("truncated", 422, "the video cannot be decoded"),
    ],
)
def test_a_bad_video_is_refused_naming_the_problem(
    tmp_path: Path, tiny_examples: ExampleEncoder, kind: str, status: int, words: str
) -> None:
    with pytest.raises(ExampleRejected) as caught:
        run(tiny_examples.encode_video(bad_video(kind, tmp_path)))
    assert caught.value.status_code == status and words in caught.value.detail, caught.value.detail


class Upload:
    """An upload read in parts, as Starlette's ``UploadFile``."""

    def __init__(self, data: bytes) -> None:
        self.stream = io.BytesIO(data)

    async def read(self, size: int = -1) -> bytes:
        return self.stream.read(size)


def test_too_many_bytes_are_refused_while_streaming_and_by_the_encoder(tmp_path: Path) -> None:
    small = examples("demo", tmp_path, example_max_image_bytes=1000, example_max_video_bytes=2000)
    assert small.limits.image_bytes == 1000 and small.limits.video_bytes == 2000
    data = bytes(5 << 20)

    async def main() -> None:
        assert await read_upload(Upload(b"x" * 1000), 1000) == b"x" * 1000
        for upload in (read_upload(Upload(data), 1000), save_upload(Upload(data), tmp_path / "up.mp4", 2000)):
            with pytest.raises(ExampleRejected) as caught:
                await upload
            assert caught.value.status_code == 413 and "is larger than the limit of" in caught.value.detail
        assert (tmp_path / "up.mp4").stat().st_size <= 2000  # it stopped reading at the limit
        with pytest.raises(ExampleRejected) as caught:
            await small.encode_image(b"\xff\xd8\xff" + bytes(1000))
        assert caught.value.status_code == 413 and "(1000 bytes)" in caught.value.detail
        (tmp_path / "big.mp4").write_bytes(bytes(2001))
        with pytest.raises(ExampleRejected) as caught:
            await small.encode_video(tmp_path / "big.mp4")
        assert caught.value.status_code == 413 and "(2000 bytes)" in caught.value.detail

    run(main())
    assert small.child_pid is None  # refused here: no process was started


# --- (d) the time limit, and crashes -----------------------------------------------------------------------


def test_an_example_past_the_time_limit_gets_a_503_and_the_next_a_fresh_child(
    tmp_path: Path,
    gate: Path,
    tiny_checkpoint: str,  # noqa: F811
) -> None:
    encoder = examples(tiny_checkpoint, tmp_path, example_timeout_s=2.0)
    image = image_bytes(colored(1, 64, 7)[0], "PNG")

    async def main() -> None:
        await encoder.start()
        try:
            with pytest.raises(ExampleRejected) as caught:
                await encoder.encode_image(image)  # held at the gate, never opened
            held_for = time.time() - (gate / "entered").stat().st_mtime
            assert caught.value.status_code == 503, caught.value.detail
            assert "longer than the limit of 2 s" in caught.value.detail and "restarted" in caught.value.detail
            assert 1.5 <= held_for < 2.0 + 20  # killed at the limit (20 s: a busy machine's slack)
            assert encoder.child_pid is None
            (gate / "open").touch()
            vector = await encoder.encode_image(image)
            assert vector.shape == (64,) and encoder.child_pid is not None
        finally:
            await encoder.close()

    run(main())


# --- (e) a busy child holds up nothing in this process -----------------------------------------------------


def test_this_process_encodes_while_the_child_is_busy_and_survives_crashes_and_callers_leaving(
    tmp_path: Path,
    gate: Path,
    tiny_checkpoint: str,  # noqa: F811
    tiny_encoder,  # noqa: F811
) -> None:
    encoder = examples(tiny_checkpoint, tmp_path, example_timeout_s=600)
    first, second = (image_bytes(colored(1, 64, seed)[0], "PNG") for seed in (8, 9))

    async def main() -> None:
        await encoder.start()
        try:
            # text encoding in this process goes on while the child holds an example
            events = []
            busy = asyncio.create_task(encoder.encode_image(first))
            await entered(gate)
            events.append("child holds the example")
            texts = await asyncio.to_thread(tiny_encoder.encode_text, ["a red square moves to the right"])
            events.append(f"text encoded, example {'done' if busy.done() else 'pending'}")
            (gate / "open").touch()
            expected_first = await busy
            events.append("example encoded")
            assert events == ["child holds the example", "text encoded, example pending", "example encoded"]
            assert tuple(texts.shape) == (1, 64)

            # a caller that leaves does not get its answer to the next one
            (gate / "open").unlink()
            (gate / "entered").unlink()
            leaving = asyncio.create_task(encoder.encode_image(first))
            await entered(gate)
            leaving.cancel()
            staying = asyncio.create_task(encoder.encode_image(second))
            (gate / "open").touch()
            expected_second = await staying
            assert leaving.cancelled()
            assert not np.allclose(expected_second, expected_first, atol=1e-3)
            np.testing.assert_array_equal(await encoder.encode_image(second), expected_second)

            # a crash (a decoder's segfault) fails only its own example
            (gate / "open").unlink()
            (gate / "entered").unlink()
            crashing = asyncio.create_task(encoder.encode_image(first))
            await entered(gate)
            crashed_pid = encoder.child_pid
            assert crashed_pid is not None
            os.kill(crashed_pid, signal.SIGSEGV)
            with pytest.raises(ExampleRejected) as caught:
                await crashing
            assert caught.value.status_code == 503 and "died (exit code -11)" in caught.value.detail
            (gate / "open").touch()
            np.testing.assert_allclose(await encoder.encode_image(first), expected_first, atol=1e-6)
            assert encoder.child_pid not in (None, crashed_pid)
        finally:
            await encoder.close()
        assert encoder.child_pid is None
        with pytest.raises(ExampleRejected) as caught:
            await encoder.encode_image(first)
        assert caught.value.status_code == 503 and "shutting down" in caught.value.detail

    run(main())
