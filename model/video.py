"""Reading frames from video files: one interface over two backends (decord, PyAV).

with VideoReader("clip.mp4") as reader:          # decord where installed, PyAV otherwise
    frames = reader.frames_at([0.5, 1.5, 2.5])   # uint8 (3, H, W, 3) RGB
frames = read_clip("clip.mp4", 0.0, 8.0, 12)     # 12 frames uniformly over [0 s, 8 s]

Times are seconds from the first frame of the video stream. The frame returned for a time is the
frame shown then: the last frame whose timestamp is at or before it (the first frame for earlier
times, the last frame for later ones). Timestamps are the stream's own, so variable-frame-rate videos
map correctly. Every failure to read a file raises ``VideoReadError`` naming the file and the cause.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BACKENDS = ("decord", "pyav")
SAMPLING_MODES = ("uniform", "fps1")

# A frame at time f is shown at time t when f <= t + TIME_EPS (decord keeps timestamps as float32).
TIME_EPS = 1e-4
# PyAV seeks (to the keyframe before) instead of decoding forward when the next time asked is this far on.
SEEK_GAP_S = 10.0


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
    width: int  # of the decoded frames
    height: int
    num_frames: int  # exact where known (container count, decord's index), else duration * fps
    codec: str  # decoder name, e.g. "h264", "vp9", "mjpeg"


@functools.cache
def available_backends() -> list[str]:
    """Backends that can be used here, the default first: ``["decord", "pyav"]`` or ``["pyav"]``."""
    try:
        import decord  # noqa: F401
    except Exception:  # not installed, or a broken native library
        return ["pyav"]
    return ["decord", "pyav"]


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


def _truncation_check(path: str, t: float, data_end: float, declared: float, fps: float) -> None:
    """Raise when ``t`` lies after the last frame the file holds but well within its declared duration."""
    tolerance = max(1.0, 2.0 / max(fps, 1e-3), 0.05 * declared)
    if data_end + tolerance < t < declared - tolerance:
        raise VideoReadError(
            path,
            f"frames end at {data_end:.2f} s but the file declares {declared:.2f} s "
            f"(asked for {t:.2f} s): truncated or corrupt",
        )


class _PyAVBackend:
    """PyAV decoding: one forward pass over the stream, seeking to a keyframe to skip long gaps or go back.

    State between calls: ``_current`` is the last frame passed (the one shown at the last time asked) and
    ``_pending`` the next decoded one, so times asked in increasing order, over one call or many, decode
    the file once.
    """

    name = "pyav"

    def __init__(self, path: str):
        import av

        self._av = av
        self.path = path
        self._container: Any = None
        self._seekable = True
        self._t0 = 0.0
        self._frames: Iterator[tuple[float, Any]] = iter(())
        self._current: tuple[float, Any] | None = None  # (seconds, frame)
        self._current_rgb: np.ndarray | None = None
        self._pending: tuple[float, Any] | None = None
        self._open()
        if self._pending is None:
            self.close()
            raise VideoReadError(path, "the video stream has no decodable frames")
        self._t0 = self._pending[0]  # times are relative to the first frame
        self._pending = (0.0, self._pending[1])
        self._data_end: float | None = None  # time of the last frame, once decoding reached it
        self.width: int = self._pending[1].width
        self.height: int = self._pending[1].height
        self.info: VideoInfo = self._probe_info(self._stream)

    # -- opening and decoding --------------------------------------------------------------------------

    def _open(self) -> None:
        """(Re)open the file and decode its first frame into ``_pending``."""
        av = self._av
        self.close()
        try:
            container = av.open(self.path, mode="r")
        except av.error.FileNotFoundError:
            raise VideoReadError(self.path, "file not found") from None
        except av.error.EOFError:
            raise VideoReadError(self.path, "the file holds no frames (it ends after its header)") from None
        except av.error.InvalidDataError as exc:
            raise VideoReadError(
                self.path, f"not a video file, or its header is corrupt or truncated ({exc.strerror})"
            ) from None
        except (av.error.FFmpegError, OSError) as exc:
            raise VideoReadError(self.path, f"cannot open the file ({exc})") from None
        self._container = container
        if not container.streams.video:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
            self.close()
            raise VideoReadError(self.path, f"no video stream (streams found: {kinds})")
        self._stream = container.streams.video[0]
        if self._stream.codec_context is None:
            self.close()
            raise VideoReadError(self.path, "unsupported video codec: no decoder for it")
        self._step = 1.0 / _frame_rate(self._stream, default=25.0)
        self._restart_decoding()

    def _restart_decoding(self) -> None:
        self._frames = self._decode()
        self._current = None
        self._current_rgb = None
        self._pending = next(self._frames, None)

    def _decode(self) -> Iterator[tuple[float, Any]]:
        """(seconds from the first frame, frame) in presentation order; errors become VideoReadError."""
        last = None
        try:
            for frame in self._container.decode(self._stream):
                if frame.time is not None:
                    t = float(frame.time) - self._t0
                else:  # no timestamp: one frame interval after the previous one
                    t = last + self._step if last is not None else 0.0
                last = t
                yield t, frame
        except self._av.error.FFmpegError as exc:
            where = f"after {last:.2f} s" if last is not None else "before the first frame"
            raise VideoReadError(self.path, f"corrupt or truncated data {where} ({exc.strerror or exc})") from None

    def _advance(self) -> None:
        """The pending frame becomes the current one; decode the next (None at the end of the stream)."""
        self._current, self._current_rgb = self._pending, None
        self._pending = next(self._frames, None)
        if self._pending is None and self._current is not None:
            self._data_end = self._current[0]

    def _seek(self, t: float) -> bool:
        """Seek so that the pending frame is at or before ``t``; False when that did not work."""
        if not self._seekable:
            return False
        back = 0.0
        for _ in range(6):
            target = t - back
            if target <= 0:
                return False
            try:
                self._container.seek(int((target + self._t0) / self._stream.time_base), stream=self._stream)
            except self._av.error.FFmpegError as exc:
                log.debug("%s: cannot seek (%s); decoding forward only", self.path, exc)
                self._seekable = False
                return False
            self._restart_decoding()
            if self._pending is not None and self._pending[0] <= t + TIME_EPS:
                return True
            back = max(1.0, 2 * back)  # landed after t: seek further back
        return False

    def _position_for(self, t: float) -> None:
        """Put the decoder at or before ``t`` (``t >= 0``), skipping long gaps by seeking."""
        here = self._current if self._current is not None else self._pending
        behind = here is None or here[0] > t + TIME_EPS
        far = self._seekable and self._pending is not None and t - self._pending[0] > SEEK_GAP_S
        if (behind or far) and not self._seek(t):
            self._open()  # from the start, decoding forward

    def _rgb(self) -> np.ndarray:
        if self._current_rgb is None:
            assert self._current is not None
            time, frame = self._current
            try:
                self._current_rgb = frame.to_ndarray(format="rgb24", width=self.width, height=self.height)
            except (self._av.error.FFmpegError, ValueError) as exc:
                raise VideoReadError(self.path, f"cannot convert the frame at {time:.2f} s to RGB ({exc})") from None
        return self._current_rgb

    def frames_at(self, times: np.ndarray) -> np.ndarray:
        out = np.empty((len(times), self.height, self.width, 3), np.uint8)
        for i in np.argsort(times, kind="stable"):
            t = max(float(times[i]), 0.0)  # before the first frame: the first frame
            self._position_for(t)
            if self._current is None:
                self._advance()
                if self._current is None:
                    raise VideoReadError(self.path, "no decodable frames on reopening the file")
            while self._pending is not None and self._pending[0] <= t + TIME_EPS:
                self._advance()
            if self._pending is None and self._data_end is not None:
                _truncation_check(self.path, t, self._data_end, self.info.duration, self.info.fps)
            out[i] = self._rgb()
        return out

    # -- metadata ----------------------------------------------------------------------------------------

    def _probe_info(self, stream: Any) -> VideoInfo:
        container = self._container
        fps = _frame_rate(stream, default=0.0)
        duration = 0.0
        if stream.duration is not None and stream.duration > 0:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None and container.duration > 0:
            duration = container.duration / self._av.time_base
            if len(container.streams) == 1:  # the container's span is the video's: drop its start offset
                duration -= self._t0
        frames = int(stream.frames or 0)
        estimate = round(duration * fps) if duration > 0 and fps > 0 else 0
        if frames <= 0 or (estimate and abs(frames - estimate) > 0.1 * estimate + 2):
            frames = estimate  # missing (webm) or not a frame count (avi written with a fine time base)
        if duration <= 0 and frames > 0 and fps > 0:
            duration = frames / fps
        return VideoInfo(
            path=self.path,
            duration=max(duration, 0.0),
            fps=fps,
            width=self.width,
            height=self.height,
            num_frames=max(frames, 1),
            codec=stream.codec_context.name,
        )

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def _frame_rate(stream: Any, default: float) -> float:
    """The average frame rate; the guessed (nominal) one where the average is missing or implausible."""
    average = float(stream.average_rate) if stream.average_rate else 0.0
    guessed = float(stream.guessed_rate) if stream.guessed_rate else 0.0
    if average > 0 and (guessed <= 0 or average <= guessed * 1.01):
        return average
    return guessed if guessed > 0 else (average or default)


class _DecordBackend:
    """decord decoding: a frame index built at open, batch reads by index."""

    name = "decord"

    def __init__(self, path: str, probe: VideoInfo):
        import decord

        self.path = path
        try:
            self._reader = decord.VideoReader(path, ctx=decord.cpu(0))
            count = len(self._reader)
            if count == 0:
                raise RuntimeError("no frames in decord's index")
            stamps = np.asarray(self._reader.get_frame_timestamp(np.arange(count)), dtype=np.float64)
        except Exception as exc:
            raise _DecordFailed(f"{type(exc).__name__}: {_first_line(exc)}") from None
        self._starts = stamps[:, 0] - stamps[0, 0]
        self.info = replace(probe, num_frames=count)

    def frames_at(self, times: np.ndarray) -> np.ndarray:
        data_end = float(self._starts[-1])
        for t in times:
            _truncation_check(self.path, float(t), data_end, self.info.duration, self.info.fps)
        index = np.searchsorted(self._starts, times + TIME_EPS, side="right") - 1
        index = np.clip(index, 0, len(self._starts) - 1)
        unique, inverse = np.unique(index, return_inverse=True)
        try:
            batch = self._reader.get_batch(unique.tolist()).asnumpy()
        except Exception as exc:
            raise _DecordFailed(f"{type(exc).__name__}: {_first_line(exc)}") from None
        if batch.shape[1:] != (self.info.height, self.info.width, 3):
            raise _DecordFailed(f"decord gave frames of shape {batch.shape[1:]}")
        return batch[inverse.reshape(-1)]

    def close(self) -> None:
        self._reader = None


class _DecordFailed(Exception):
    """decord could not do what PyAV may still do; the reader falls back."""


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


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

    ``backend``: "decord" or "pyav"; None picks decord where installed. When decord cannot open or read a
    file it falls back to PyAV (logged at debug level); ``self.backend`` says which one is in use.
    Not thread-safe: use one reader per thread or process.
    """

    def __init__(self, path: str | os.PathLike[str], backend: str | None = None):
        self.path = str(Path(path))
        wanted = _resolve_backend(backend)
        _check_file(self.path)
        pyav = _PyAVBackend(self.path)  # validates the file and reads its metadata, for either backend
        self._impl: _PyAVBackend | _DecordBackend | None = pyav
        if wanted == "decord":
            try:
                self._impl = _DecordBackend(self.path, pyav.info)
                pyav.close()
            except _DecordFailed as exc:
                log.debug("%s: decord cannot open it (%s); using PyAV", self.path, exc)
        self.info: VideoInfo = self._impl.info
        self.backend: str = self._impl.name  # the backend in use: "decord" or "pyav"

    def frames_at(self, times: Sequence[float]) -> np.ndarray:
        """uint8 frames (len(times), H, W, 3), RGB, in the order asked."""
        t = _check_times(self.path, times)
        if self._impl is None:
            raise ValueError(f"reader of {self.path} is closed")
        try:
            return self._impl.frames_at(t)
        except _DecordFailed as exc:
            log.debug("%s: decord failed while reading (%s); using PyAV", self.path, exc)
            self._impl.close()
            self._impl = _PyAVBackend(self.path)
            self.backend = self._impl.name
            return self._impl.frames_at(t)

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
