"""What decoding worker processes run: hash and probe a file, sample clip frames, make thumbnails.

Everything here is a top-level function of picklable arguments (safe under the ``spawn`` start method)
and imports neither FAISS nor SQLAlchemy. Frames leave a worker resized and cropped for the encoder, uint8
(T, 3, S, S): a quarter of the bytes of float32; the main process normalises a batch where it encodes it.
"""

from __future__ import annotations

import io
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from model.files import sha256_of_file

from .clips import ClipPolicy, clip_windows

if TYPE_CHECKING:
    from model.preprocess import FramePreprocess
    from model.video import VideoReader


@dataclass(frozen=True)
class DecodeSpec:
    """How clips are cut and sampled for one encoder."""

    num_frames: int
    preprocess: FramePreprocess  # the encoder's: frames leave a worker resized by its ``resize`` half
    policy: ClipPolicy = ClipPolicy()
    chunk_clips: int = 16  # clips decoded per task (bounds memory for long videos)
    thumbnail_width: int = 160
    sampling: str = "uniform"


@dataclass
class DecodedClip:
    position: int
    start: float
    end: float
    frames: np.ndarray  # uint8 (T, 3, S, S), resized for the encoder (FramePreprocess.resize)
    thumbnail: bytes  # JPEG of the middle frame


@dataclass
class Probed:
    """The result of ``prepare_video``: file facts, clips to make, and the first chunk decoded."""

    path: str
    status: Literal["ok", "unchanged", "failed"]
    size: int = 0
    mtime_ns: int = 0
    content_hash: str | None = None
    error: str | None = None
    duration: float = 0.0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    codec: str = ""
    windows: list[tuple[float, float]] = field(default_factory=list)
    first_chunk: list[DecodedClip] = field(default_factory=list)


def init_worker() -> None:
    """Worker start-up: one torch thread, ignore Ctrl-C (the parent handles it), exit with the parent."""
    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent.sentinel,), daemon=True).start()


def _exit_with_parent(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])  # the parent died, SIGKILL included: do not linger
    os._exit(0)


def prepare_video(path: str, known_hash: str | None, spec: DecodeSpec) -> Probed:
    """Hash ``path``; stop there when the hash is ``known_hash``; else probe it, cut it into clips and
    decode the first ``spec.chunk_clips`` of them. Failures come back as ``status="failed"``."""
    try:
        stat = os.stat(path)
        result = Probed(path, "ok", size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        result.content_hash = sha256_of_file(path)
    except OSError as exc:
        return Probed(path, "failed", error=f"cannot read the file: {exc.strerror or exc}")
    if known_hash is not None and result.content_hash == known_hash:
        result.status = "unchanged"
        return result
    try:
        from model.video import VideoReader

        with VideoReader(path) as reader:
            info = reader.info
            if info.num_frames < 1:
                raise ValueError("the video has no frames")
            result.duration, result.fps, result.codec = info.duration, info.fps, info.codec
            result.width, result.height = info.width, info.height
            result.windows = clip_windows(info.duration, spec.policy)
            first = list(enumerate(result.windows[: spec.chunk_clips]))
            result.first_chunk = _decode(reader, first, spec)
    except Exception as exc:  # a bad file must not stop the batch: report it
        result.status, result.error = "failed", describe_error(exc)
    return result


def decode_clips(path: str, windows: list[tuple[int, tuple[float, float]]], spec: DecodeSpec) -> list[DecodedClip]:
    """Decode the clips ``(position, (start, end))`` of ``path`` (a later chunk of a long video)."""
    from model.video import VideoReader

    with VideoReader(path) as reader:
        return _decode(reader, windows, spec)


def _decode(reader: VideoReader, windows: list[tuple[int, tuple[float, float]]], spec: DecodeSpec) -> list[DecodedClip]:
    from model.video import sample_times

    times: list[float] = []
    for _, (start, end) in windows:
        times += sample_times(start, end, spec.num_frames, spec.sampling)
        times.append((start + end) / 2)  # the thumbnail's frame
    frames = reader.frames_at(times)  # one pass over the file for all clips of the chunk
    per_clip = spec.num_frames + 1
    clips = []
    for i, (position, (start, end)) in enumerate(windows):
        block = frames[i * per_clip : (i + 1) * per_clip]
        clips.append(
            DecodedClip(
                position=position,
                start=start,
                end=end,
                frames=spec.preprocess.resize(block[:-1]).numpy(),
                thumbnail=jpeg_thumbnail(block[-1], spec.thumbnail_width),
            )
        )
    return clips


def jpeg_thumbnail(frame: np.ndarray, width: int, quality: int = 85) -> bytes:
    """A JPEG of ``frame`` (H, W, 3) scaled down to ``width`` pixels wide (never up)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(frame))
    if image.width > width:
        image = image.resize((width, max(1, round(image.height * width / image.width))), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def describe_error(exc: BaseException) -> str:
    """One line for the catalog's ``error`` column: the reader's own message, else the exception type."""
    from model.video import VideoReadError

    if isinstance(exc, VideoReadError):
        return exc.cause
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else 'no message'}"[:1000]
