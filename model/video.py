"""Reading frames from video files: one interface over two backends (PyAV, decord).

with VideoReader("clip.mp4") as reader:          # PyAV by default; backend="decord" where installed
    frames = reader.frames_at([0.5, 1.5, 2.5])   # uint8 (3, H, W, 3) RGB, upright, display size
    clips = reader.sample(times, lambda f: f.for_encoder(preprocess))   # straight to the encoder's size
frames = read_clip("clip.mp4", 0.0, 8.0, 12)     # 12 frames uniformly over [0 s, 8 s]

Times are seconds from the first frame of the video stream. The frame returned for a time is the
frame shown then: the last frame whose timestamp is at or before it (the first frame for earlier
times, the last frame for later ones). Timestamps are the stream's own, so variable-frame-rate videos
map correctly. Frames come upright (the container's display rotation applied) at their display aspect
(non-square pixels widened). Every failure to read a file raises ``VideoReadError`` naming the file and
the cause. PyAV decodes only what the times asked for need (``video_pyav``); decord reads whole frames by
index (``video_decord``).
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import numpy as np

from .video_decord import DecordBackend, DecordFailed
from .video_frames import DisplayFrame
from .video_pyav import DecodeSteps, PyAVBackend, PyAVReadError, truncation

log = logging.getLogger(__name__)

T = TypeVar("T")
BACKENDS = ("pyav", "decord")
SAMPLING_MODES = ("uniform", "fps1")


class VideoReadError(RuntimeError):
    """A video file could not be read; the message names the file and the cause."""

    def __init__(self, path: str | os.PathLike[str], cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"cannot read video {self.path}: {cause}")


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration: float  # seconds, as the file declares it (estimated from frames when it does not)
    fps: float  # average frame rate
    width: int  # of the frames as shown: upright, non-square pixels widened
    height: int
    num_frames: int  # exact where known (container count, decord's index), else duration * fps
    codec: str  # decoder name, e.g. "h264", "vp9", "mjpeg"
    rotation: int = 0  # display rotation, degrees counterclockwise (0, 90, 180, 270)
    sample_aspect: Fraction | None = None  # pixel aspect ratio, when the file says (None: square)
    pixel_format: str = ""  # as decoded, e.g. "yuv420p", "yuv420p10le"


@functools.cache
def available_backends() -> list[str]:
    """Backends that can be used here, the default first: ``["pyav", "decord"]`` or ``["pyav"]``.

    PyAV is the default: on real 720p-1080p files it reads the frames ingestion samples faster than decord
    (docs/BENCHMARKS.md, "Indexer")."""
    try:
        import decord  # noqa: F401
    except Exception:  # not installed, or a broken native library
        return ["pyav"]
    return ["pyav", "decord"]


def sample_times(start: float, end: float, num_frames: int, mode: str = "uniform") -> list[float]:
    """``num_frames`` times in ``[start, end]``, in increasing order.

    ``uniform``: the centres of ``num_frames`` equal segments. ``fps1`` (the reference's sampling):
    one frame per second from ``start`` while before ``end``, the first ``num_frames`` of them; a
    shorter clip is padded by repeating its frames, spread evenly (each repeated in place, order kept).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise ValueError(f"need finite start <= end, got start={start}, end={end}")
    if mode == "uniform":
        step = (end - start) / num_frames
        return [start + (i + 0.5) * step for i in range(num_frames)]
    if mode == "fps1":
        times = [start + i for i in range(num_frames) if start + i < end] or [start]
        return [times[j * len(times) // num_frames] for j in range(num_frames)]
    raise ValueError(f"unknown sampling mode {mode!r}: expected one of {', '.join(SAMPLING_MODES)}")


def _check_times(path: str, times: Sequence[float]) -> np.ndarray:
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(t)):
        raise ValueError(f"times for {path} must be finite seconds, got {list(times)}")
    return t


def _check_file(path: str) -> None:
    """Raise VideoReadError for what is plainly not a readable file, before a decoder sees it."""
    if not os.path.exists(path):
        raise VideoReadError(path, "file not found")
    if os.path.isdir(path):
        raise VideoReadError(path, "is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(path, "file is empty (0 bytes)")


def _resolve_backend(backend: str | None) -> str:
    available = available_backends()
    if backend is None:
        return available[0]
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend not in available:
        raise ValueError(f"video backend {backend!r} is not installed here (available: {', '.join(available)})")
    return backend


class VideoReader:
    """Frames of one video file at the times asked; opens the file once.

    ``backend``: "pyav" or "decord"; None picks PyAV. When decord cannot open or read a file it falls back
    to PyAV (logged at debug level); ``self.backend`` says which one is in use. ``threads``: decoding
    threads (0: as many as FFmpeg likes); ``steps``: which of PyAV's savings to make (all, by default).
    ``timings`` holds the seconds spent opening, demuxing and decoding. Not thread-safe: use one reader
    per thread or process.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        backend: str | None = None,
        threads: int = 0,
        steps: DecodeSteps = DecodeSteps(),
    ):
        self.path = str(Path(path))
        self.threads, self.steps = threads, steps
        wanted = _resolve_backend(backend)
        _check_file(self.path)
        pyav = self._pyav()  # validates the file and reads its metadata, for either backend
        facts = pyav.probe()
        self.info = VideoInfo(
            path=self.path,
            width=pyav.width,
            height=pyav.height,
            rotation=pyav.rotation,
            sample_aspect=pyav.sample_aspect,
            pixel_format=pyav.pixel_format,
            **facts,
        )
        self._impl: PyAVBackend | DecordBackend | None = pyav
        if wanted == "decord":
            try:
                decord = DecordBackend(self.path, pyav.stored_size, pyav.sample_aspect, pyav.rotation, threads)
                self.info = VideoInfo(**{**self.info.__dict__, "num_frames": decord.num_frames})
                self._impl = decord
                pyav.close()
            except DecordFailed as exc:
                log.debug("%s: decord cannot open it (%s); using PyAV", self.path, exc)
        self.backend: str = self._impl.name  # the backend in use: "pyav" or "decord"

    def _pyav(self) -> PyAVBackend:
        try:
            backend = PyAVBackend(self.path, self.threads, self.steps)
        except PyAVReadError as exc:
            raise VideoReadError(self.path, str(exc)) from None
        backend.probe()  # the declared duration, for the truncation check
        return backend

    @property
    def decoded_frames(self) -> int | None:
        """Frames the PyAV decoder has output so far (None with decord, which does not say)."""
        return self._impl.decoded if isinstance(self._impl, PyAVBackend) else None

    @property
    def timings(self) -> dict[str, float]:
        return dict(self._impl.timings) if self._impl is not None else {}

    def frames_at(self, times: Sequence[float]) -> np.ndarray:
        """uint8 frames (len(times), H, W, 3), RGB, upright at display size, in the order asked."""
        frames = self.sample(times, lambda _, frame: frame.rgb())
        if not frames:
            return np.empty((0, self.info.height, self.info.width, 3), np.uint8)
        return np.stack(frames)

    def sample(self, times: Sequence[float], convert: Callable[[int, DisplayFrame], T]) -> list[T]:
        """``convert(i, frame)`` of the frame shown at each time ``times[i]``, in the order asked: e.g.
        ``frame.for_encoder(preprocess)`` for the encoder's input, scaled straight from the decoded frame."""
        t = _check_times(self.path, times)
        if self._impl is None:
            raise ValueError(f"reader of {self.path} is closed")
        try:
            if isinstance(self._impl, DecordBackend):
                for moment in t:
                    problem = truncation(float(moment), self._impl.data_end, self.info.duration, self.info.fps)
                    if problem:
                        raise VideoReadError(self.path, problem)
            return self._impl.sample(t, convert)
        except DecordFailed as exc:
            log.debug("%s: decord failed while reading (%s); using PyAV", self.path, exc)
            self._impl.close()
            self._impl = self._pyav()
            self.backend = self._impl.name
            return self.sample(times, convert)
        except PyAVReadError as exc:
            raise VideoReadError(self.path, str(exc)) from None
        except ValueError as exc:  # a frame the converter cannot handle
            raise VideoReadError(self.path, str(exc)) from None

    def close(self) -> None:
        if self._impl is not None:
            self._impl.close()
            self._impl = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe_video(path: str | os.PathLike[str], backend: str | None = None) -> VideoInfo:
    """Metadata of a video file (and a check that its first frame decodes)."""
    with VideoReader(path, backend=backend) as reader:
        return reader.info


def read_clip(
    path: str | os.PathLike[str],
    start: float,
    end: float,
    num_frames: int,
    mode: str = "uniform",
    backend: str | None = None,
) -> np.ndarray:
    """uint8 frames (num_frames, H, W, 3) of ``[start, end]`` seconds, sampled by ``mode``.

    ``end`` past the video's declared duration (``math.inf`` included) is cut to it.
    """
    with VideoReader(path, backend=backend) as reader:
        duration = reader.info.duration
        if duration > 0:
            end = min(end, duration)
            start = min(start, end)
        elif not math.isfinite(end):
            raise VideoReadError(path, "the file does not declare its duration; give a finite clip end")
        return reader.frames_at(sample_times(start, end, num_frames, mode))
