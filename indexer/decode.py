"""The decoding stage: one video file in, its facts and then its clips out, in chunks, opened once.

``decode_video`` is a generator of events: a ``Probed`` (file facts, the clip windows; or ``unchanged``,
or ``failed``), then a ``DecodedChunk`` of up to ``chunk_clips`` clips at a time, in time order, from one
reader that decodes the file in a single forward pass (``model.video``: only the frames the clips sample,
and those the codec needs to reach them). A worker process (``workers``) runs it and streams the events to
the encoder's process; ``--workers 0`` runs it in that process. Frames leave resized for the encoder, uint8
(T, 3, S, S): the encoder's process normalises a batch where it encodes it.

Everything here is picklable, imports neither FAISS nor SQLAlchemy, and keeps timings of its steps
(``TIMING_KEYS``) for the run's report.
"""

from __future__ import annotations

import io
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from model.files import sha256_of_file
from model.video_pyav import DecodeSteps

from .clips import ClipPolicy, clip_windows

if TYPE_CHECKING:
    import torch

    from model.preprocess import FramePreprocess
    from model.video import VideoReader
    from model.video_frames import DisplayFrame

# seconds spent per step, summed over a run: hashing, opening, demuxing, decoding (frames the decoder
# output, skipped ones cost little), converting to the encoder's size, and making thumbnails
TIMING_KEYS = ("hash", "open", "demux", "decode", "convert", "thumbnails")


@dataclass(frozen=True)
class DecodeSpec:
    """How clips are cut, sampled and decoded for one encoder."""

    num_frames: int
    preprocess: FramePreprocess  # the encoder's: frames leave resized by it (the ``resize`` half)
    policy: ClipPolicy = ClipPolicy()
    chunk_clips: int = 16  # clips per message to the encoder (bounds memory for long videos)
    thumbnail_width: int = 160
    sampling: str = "uniform"
    backend: str | None = None  # model.video backend: None (PyAV) or "decord"
    threads: int = 0  # decoding threads per file (0: FFmpeg's choice)
    steps: DecodeSteps = DecodeSteps()  # the PyAV reader's savings (all; benchmarks switch them off)
    scale_in_decoder: bool = True  # scale in libswscale (else convert whole frames, resize with torch)
    segment_clips: int = 48  # a file with more clips is split into segments of this many, decoded in
    # parallel by as many workers (0: never split); each segment costs a seek and up to a GOP decoded twice


@dataclass
class DecodedClip:
    position: int
    start: float
    end: float
    frames: np.ndarray | torch.Tensor  # uint8 (T, 3, S, S), resized for the encoder (a GPU tensor from nvdec)
    thumbnail: bytes  # JPEG of the middle frame


@dataclass
class Probed:
    """The first event for a file: its facts and the clips to make (or why there are none)."""

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
    decoder: str = ""  # what decoded it: "pyav", "decord", "nvdec"
    windows: list[tuple[float, float]] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)  # clip ranges left to other tasks
    timings: dict[str, float] = field(default_factory=dict)


Segment = tuple[int, int]  # clip positions [first, stop) of a file, decoded by one task


def split(count: int, size: int) -> list[Segment]:
    """``count`` clips in segments of ``size`` (one segment when ``size`` is 0 or covers them all)."""
    if size <= 0 or count <= size:
        return [(0, count)]
    return [(first, min(first + size, count)) for first in range(0, count, size)]


@dataclass
class DecodedChunk:
    """Clips of a file, in time order, and the seconds their decoding took per step."""

    clips: list[DecodedClip]
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class DecodeFailed:
    """Decoding stopped part-way (a file corrupt after its first clips): its clips so far are void."""

    error: str


def init_worker() -> None:
    """Worker start-up: one OpenMP thread should torch be needed (the PyAV path never imports it), ignore
    Ctrl-C (the parent handles it), exit with the parent."""
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent.sentinel,), daemon=True).start()


def _exit_with_parent(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])  # the parent died, SIGKILL included: do not linger
    os._exit(0)


def decode_video(
    path: str, known_hash: str | None, spec: DecodeSpec, segment: Segment | None = None
) -> Iterator[Probed | DecodedChunk | DecodeFailed]:
    """Hash ``path`` (stop there when the hash is ``known_hash``), probe it, cut it into clips and decode
    them chunk by chunk; a long file's later segments are left to other tasks (``Probed.segments``).
    With ``segment``, decode only those clips of a file probed before (no hash, no ``Probed``). Failures
    come back as events, never as exceptions."""
    if segment is not None:
        yield from _decode_segment(path, spec, segment)
        return
    probed = hash_file(path, known_hash)
    if probed.status != "ok":
        yield probed
        return
    from model.video import VideoReader

    try:
        reader = VideoReader(path, backend=spec.backend, threads=spec.threads, steps=spec.steps)
    except Exception as exc:  # a bad file must not stop the batch: report it
        probed.status, probed.error = "failed", describe_error(exc)
        yield probed
        return
    with reader:
        info = reader.info
        probed.duration, probed.fps, probed.codec = info.duration, info.fps, info.codec
        probed.width, probed.height, probed.decoder = info.width, info.height, reader.backend
        probed.windows = clip_windows(info.duration, spec.policy)
        first, *others = split(len(probed.windows), spec.segment_clips)
        probed.segments = others
        probed.timings["open"] = reader.timings.get("open", 0.0)
        yield probed
        yield from _decode_chunks(reader, probed.windows, first, spec)


def hash_file(path: str, known_hash: str | None) -> Probed:
    """The file's size, mtime and content hash: ``ok`` to decode, ``unchanged`` when the hash is
    ``known_hash``, ``failed`` when it cannot be read."""
    started = time.perf_counter()
    try:
        stat = os.stat(path)
        probed = Probed(path, "ok", size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        probed.content_hash = sha256_of_file(path)
    except OSError as exc:
        return Probed(path, "failed", error=f"cannot read the file: {exc.strerror or exc}")
    probed.timings["hash"] = time.perf_counter() - started
    if known_hash is not None and probed.content_hash == known_hash:
        probed.status = "unchanged"
    return probed


def _decode_segment(path: str, spec: DecodeSpec, segment: Segment) -> Iterator[DecodedChunk | DecodeFailed]:
    from model.video import VideoReader

    try:
        reader = VideoReader(path, backend=spec.backend, threads=spec.threads, steps=spec.steps)
    except Exception as exc:  # readable a moment ago: changed or gone since
        yield DecodeFailed(describe_error(exc))
        return
    with reader:
        windows = clip_windows(reader.info.duration, spec.policy)
        yield from _decode_chunks(reader, windows, segment, spec)


def _decode_chunks(
    reader: VideoReader, windows: list[tuple[float, float]], segment: Segment, spec: DecodeSpec
) -> Iterator[DecodedChunk | DecodeFailed]:
    """The clips of ``segment``, ``spec.chunk_clips`` at a time, with the reader's time per step."""
    positions = list(enumerate(windows))[segment[0] : segment[1]]
    before = dict(reader.timings)
    for begin in range(0, len(positions), spec.chunk_clips):
        try:
            chunk = _decode(reader, positions[begin : begin + spec.chunk_clips], spec)
        except Exception as exc:
            yield DecodeFailed(describe_error(exc))
            return
        now = reader.timings
        for key in ("demux", "decode"):
            chunk.timings[key] = now.get(key, 0.0) - before.get(key, 0.0)
        chunk.timings["decode"] -= chunk.timings["convert"] + chunk.timings["thumbnails"]
        before = dict(now)
        yield chunk


def _decode(reader: VideoReader, windows: list[tuple[int, tuple[float, float]]], spec: DecodeSpec) -> DecodedChunk:
    """The clips ``(position, (start, end))``: their sampled frames at the encoder's size and a thumbnail
    of each one's middle frame, in one pass over the chunk's stretch of the file."""
    from model.video import sample_times

    times: list[float] = []
    for _, (start, end) in windows:
        times += sample_times(start, end, spec.num_frames, spec.sampling)
        times.append((start + end) / 2)  # the thumbnail's frame
    per_clip = spec.num_frames + 1
    timings = {"convert": 0.0, "thumbnails": 0.0}

    def convert(index: int, frame: DisplayFrame) -> np.ndarray | bytes:
        started = time.perf_counter()
        if index % per_clip == spec.num_frames:
            jpeg = jpeg_thumbnail(frame.thumbnail(spec.thumbnail_width))
            timings["thumbnails"] += time.perf_counter() - started
            return jpeg
        if spec.scale_in_decoder:
            resized = frame.for_encoder(spec.preprocess)
        else:
            resized = spec.preprocess.resize(frame.rgb()[None])[0].numpy()
        timings["convert"] += time.perf_counter() - started
        return resized

    results = reader.sample(times, convert)
    clips = []
    for i, (position, (start, end)) in enumerate(windows):
        block = results[i * per_clip : (i + 1) * per_clip]
        frames = np.stack(block[:-1])  # type: ignore[arg-type]  # (T, 3, S, S): convert gave arrays here
        thumbnail = block[-1]
        assert isinstance(thumbnail, bytes)
        clips.append(DecodedClip(position, start, end, frames, thumbnail))
    return DecodedChunk(clips, timings)


def jpeg_thumbnail(image: np.ndarray, quality: int = 85) -> bytes:
    """A JPEG of an RGB image (H, W, 3)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def describe_error(exc: BaseException) -> str:
    """One line for the catalog's ``error`` column: the reader's own message, else the exception type."""
    from model.video import VideoReadError

    if isinstance(exc, VideoReadError):
        return exc.cause
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else 'no message'}"[:1000]
