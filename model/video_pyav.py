"""PyAV decoding that decodes only what the times asked for need, in one forward pass over the file.

- **One pass.** Times are served in increasing order; the decoder keeps its place between calls, so a
  caller that asks for the clips of a long video chunk by chunk decodes the file once, and a frame shared
  by two clips is decoded once.
- **Frames nobody looks at are not decoded.** Each packet is decoded with ``skip_frame`` switched for that
  packet: when no time asked for falls in the span its frame is shown (from its timestamp to the next
  frame's, known from a look-ahead of demuxed packets), a frame that no other frame refers to is skipped
  by the decoder. Reference frames are always decoded, so every frame that is shown is exact.
- **Stretches without a time asked for are skipped by seeking** to the keyframe before the next time,
  when the container's index shows one after the current position.
- **Frame threading** (``thread_type="AUTO"``), and frames are converted to RGB only when they are the
  frame shown at a time asked for (``video_frames.AVFrame``).
"""

from __future__ import annotations

import bisect
import logging
import time as clock
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeVar

import numpy as np

from .video_frames import AVFrame, DisplayFrame, display_size

log = logging.getLogger(__name__)

T = TypeVar("T")
TIME_EPS = 1e-4  # a frame at time f is shown at time t when f <= t + TIME_EPS
LOOKAHEAD = 24  # demuxed packets held back to learn when each frame stops being shown (>= reorder depth)
SEEK_MIN_GAP_S = 1.0  # never seek for less than this (a seek flushes the decoder)


class PyAVReadError(Exception):
    """What went wrong, in words for the reader's ``VideoReadError``."""


@dataclass(frozen=True)
class DecodeSteps:
    """Which of the savings above to make (all by default; switched off one at a time, they measure what
    each one gains: ``bench/ingest.py --ablate``)."""

    skip_unseen: bool = True  # skip non-reference frames that no time asked for shows
    seek_gaps: bool = True  # seek over stretches holding a keyframe and no time asked for
    frame_threads: bool = True  # frame threading (else slice threading only)


class PyAVBackend:
    """Frames of one file at increasing times, decoding as little as the times allow."""

    name = "pyav"
    _last_frame_time: float | None  # of the last frame decoded (gives untimed frames a time)

    def __init__(self, path: str, threads: int = 0, steps: DecodeSteps = DecodeSteps()) -> None:
        import av

        self._av = av
        self.path = path
        self.threads, self.steps = threads, steps
        self.timings = {"open": 0.0, "demux": 0.0, "decode": 0.0}  # seconds, for the callers' reports
        self.decoded = 0  # frames the decoder output (skipped frames are not counted)
        self.declared_duration, self.declared_fps = 0.0, 0.0  # set by probe()
        self._container: Any = None
        started = clock.perf_counter()
        self._open()
        self.timings["open"] += clock.perf_counter() - started

    # --- opening -------------------------------------------------------------------------------------------

    def _open(self) -> None:
        av = self._av
        self.close()
        try:
            container = av.open(self.path, mode="r")
        except av.error.FileNotFoundError:
            raise PyAVReadError("file not found") from None
        except av.error.EOFError:
            raise PyAVReadError("the file holds no frames (it ends after its header)") from None
        except av.error.InvalidDataError as exc:
            raise PyAVReadError(f"not a video file, or its header is corrupt or truncated ({exc.strerror})") from None
        except (av.error.FFmpegError, OSError) as exc:
            raise PyAVReadError(f"cannot open the file ({exc})") from None
        self._container = container
        if not container.streams.video:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
            self.close()
            raise PyAVReadError(f"no video stream (streams found: {kinds})")
        stream = self._stream = container.streams.video[0]
        if stream.codec_context is None:
            self.close()
            raise PyAVReadError("unsupported video codec: no decoder for it")
        stream.thread_type = "AUTO" if self.steps.frame_threads else "SLICE"
        stream.codec_context.thread_count = self.threads
        self._codec = stream.codec_context
        self._time_base = float(stream.time_base) if stream.time_base else 0.0
        self._step = 1.0 / frame_rate(stream, default=25.0)
        self._keyframes = sorted(e.timestamp for e in stream.index_entries if e.is_keyframe and e.timestamp is not None)
        self._t0: float | None = None
        self._start_pass()
        first = self._next_frame()
        if first is None:
            self.close()
            raise PyAVReadError("the video stream has no decodable frames")
        self._t0 = first.pts * self._time_base if first.pts is not None else 0.0
        self._keyframe_times = [k * self._time_base - self._t0 for k in self._keyframes]
        self._pending: tuple[float, Any] | None = (0.0, first)
        self._last_frame_time = 0.0  # the first frame's
        self.rotation = int(first.rotation or 0) % 360 if hasattr(first, "rotation") else 0
        sar = stream.codec_context.sample_aspect_ratio or stream.sample_aspect_ratio
        self.sample_aspect = Fraction(sar) if sar else None
        self.stored_size = (first.height, first.width)  # as decoded, before rotation and pixel aspect
        self.width, self.height = display_size(first.width, first.height, self.sample_aspect, self.rotation)
        self.pixel_format = first.format.name

    def _start_pass(self) -> None:
        """Decode from the container's current position (after opening or a seek)."""
        self._packets = self._demux()
        self._frames: deque[Any] = deque()  # decoded, not yet taken
        self._current: tuple[float, Any] | None = None  # the frame shown at the last time served
        self._pending = None
        self._wanted: list[float] = []  # times still to serve, ascending (for skipping)
        self._data_end: float | None = None
        self._last_frame_time = None

    # --- demuxing and decoding ------------------------------------------------------------------------------

    def _demux(self) -> Iterator[tuple[Any, float | None]]:
        """(packet, the presentation time of the next frame after it, or None) in decoding order."""
        window: deque[Any] = deque()
        recent: deque[int] = deque(maxlen=LOOKAHEAD)  # timestamps of packets already passed on
        packets = self._container.demux(self._stream)
        while True:
            started = clock.perf_counter()
            try:
                packet = next(packets, None)
            except self._av.error.FFmpegError as exc:
                raise PyAVReadError(f"corrupt or truncated data ({exc.strerror or exc})") from None
            finally:
                self.timings["demux"] += clock.perf_counter() - started
            if packet is not None and packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            if packet is not None:
                window.append(packet)
                if len(window) <= LOOKAHEAD:
                    continue
            if not window:
                return
            head = window.popleft()
            later: list[int] = []
            if head.pts is not None:  # a frame decoded earlier can be shown later (B-frames): look both ways
                later = [p for p in (*recent, *(q.pts for q in window)) if p is not None and p > head.pts]
                recent.append(head.pts)
            yield head, (self._seconds(min(later)) if later else None)

    def _seconds(self, pts: int) -> float | None:
        return None if self._t0 is None else pts * self._time_base - self._t0

    def _needed(self, packet: Any, next_time: float | None) -> bool:
        """Whether the frame of ``packet`` is shown at a time still wanted (True when that is unknown)."""
        if packet.pts is None or self._t0 is None or not self._wanted or not self.steps.skip_unseen:
            return True
        start = self._seconds(packet.pts)
        assert start is not None
        i = bisect.bisect_left(self._wanted, start - TIME_EPS)
        return i < len(self._wanted) and (next_time is None or self._wanted[i] < next_time - TIME_EPS)

    def _next_frame(self) -> Any | None:
        """The next decoded frame in presentation order, or None at the end of the stream."""
        av = self._av
        while not self._frames:
            item = next(self._packets, None)
            started = clock.perf_counter()
            try:
                if item is None:
                    self._codec.skip_frame = "DEFAULT"
                    self._frames.extend(self._codec.decode(None))  # drain the decoder
                    if not self._frames:
                        return None
                    break
                packet, next_time = item
                self._codec.skip_frame = "DEFAULT" if self._needed(packet, next_time) else "NONREF"
                self._frames.extend(self._codec.decode(packet))
            except av.error.EOFError:
                return None
            except av.error.FFmpegError as exc:
                where = f"after {self._last_frame_time:.2f} s" if self._last_frame_time is not None else "early"
                raise PyAVReadError(f"corrupt or truncated data {where} ({exc.strerror or exc})") from None
            finally:
                self.timings["decode"] += clock.perf_counter() - started
        self.decoded += 1
        return self._frames.popleft()

    def _frame_time(self, frame: Any) -> float:
        # from pts and the stream's time base: frames drained at the end of the stream have no time_base
        if frame.pts is not None and self._t0 is not None:
            t = frame.pts * self._time_base - self._t0
        else:  # no timestamp: one frame interval after the previous one
            t = self._last_frame_time + self._step if self._last_frame_time is not None else 0.0
        self._last_frame_time = t
        return t

    def _advance(self) -> None:
        """The pending frame becomes the current one; decode the next (None at the end of the stream)."""
        self._current = self._pending
        frame = self._next_frame()
        self._pending = (self._frame_time(frame), frame) if frame is not None else None
        if self._pending is None and self._current is not None:
            self._data_end = self._current[0]

    # --- seeking --------------------------------------------------------------------------------------------

    def _keyframe_between(self, after: float, until: float) -> float | None:
        """The last indexed keyframe time in (after, until], or None (no index, or none there)."""
        times = self._keyframe_times
        i = bisect.bisect_right(times, until + TIME_EPS) - 1
        return times[i] if i >= 0 and times[i] > after + TIME_EPS else None

    def _seek_to(self, t: float) -> bool:
        """Seek so that decoding resumes at a keyframe at or before ``t``; False when that did not work."""
        back = 0.0
        for _ in range(6):
            target = t - back
            if target <= 0:
                return False
            try:
                self._container.seek(int((target + (self._t0 or 0.0)) / self._time_base), stream=self._stream)
                self._codec.flush_buffers()
            except (self._av.error.FFmpegError, ZeroDivisionError) as exc:
                log.debug("%s: cannot seek (%s); decoding forward only", self.path, exc)
                self._keyframe_times = []
                return False
            self._start_pass()
            frame = self._next_frame()
            self._pending = (self._frame_time(frame), frame) if frame is not None else None
            if self._pending is not None and self._pending[0] <= t + TIME_EPS:
                return True
            back = max(1.0, 2 * back)  # landed after t: seek further back
        return False

    def _position_for(self, t: float) -> None:
        """Put the decoder at or before ``t``: seek over a stretch holding a keyframe, or back."""
        here = self._current if self._current is not None else self._pending
        if here is not None and here[0] > t + TIME_EPS:  # behind: start again from a keyframe before t
            if not self._seek_to(t):
                self._open()
            return
        if self._pending is None or t - self._pending[0] < SEEK_MIN_GAP_S:
            return
        seek = self.steps.seek_gaps and self._keyframe_between(self._pending[0], t) is not None
        if seek and not self._seek_to(t):
            self._open()

    # --- serving times --------------------------------------------------------------------------------------

    def sample(self, times: np.ndarray, convert: Callable[[int, DisplayFrame], T]) -> list[T]:
        """``convert(i, frame)`` of the frame shown at each ``times[i]``, in the order asked (any order)."""
        order = np.argsort(times, kind="stable")
        results: list[Any] = [None] * len(times)
        ascending = [max(float(times[i]), 0.0) for i in order]
        for rank, i in enumerate(order):
            t = ascending[rank]
            self._position_for(t)
            self._wanted = ascending[rank:]
            if self._current is None:
                self._advance()
                if self._current is None:
                    raise PyAVReadError("no decodable frames on reopening the file")
            while self._pending is not None and self._pending[0] <= t + TIME_EPS:
                self._advance()
            if self._pending is None and self._data_end is not None:
                problem = truncation(t, self._data_end, self.declared_duration, self.declared_fps)
                if problem:
                    raise PyAVReadError(problem)
            shown, frame = self._current
            results[i] = convert(int(i), AVFrame(frame, shown, self.sample_aspect, self.rotation))
        self._wanted = []
        return results

    # --- metadata ---------------------------------------------------------------------------------------------

    def probe(self) -> dict[str, Any]:
        """Duration, frame rate, frame count and codec, as the container declares them."""
        stream, container = self._stream, self._container
        fps = frame_rate(stream, default=0.0)
        duration = 0.0
        if stream.duration is not None and stream.duration > 0:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None and container.duration > 0:
            duration = container.duration / self._av.time_base
            if len(container.streams) == 1:  # the container's span is the video's: drop its start offset
                duration -= self._t0 or 0.0
        frames = int(stream.frames or 0)
        estimate = round(duration * fps) if duration > 0 and fps > 0 else 0
        if frames <= 0 or (estimate and abs(frames - estimate) > 0.1 * estimate + 2):
            frames = estimate  # missing (webm) or not a frame count (avi written with a fine time base)
        if duration <= 0 and frames > 0 and fps > 0:
            duration = frames / fps
        self.declared_duration, self.declared_fps = max(duration, 0.0), fps
        return {"duration": max(duration, 0.0), "fps": fps, "num_frames": max(frames, 1), "codec": self._codec.name}

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def truncation(t: float, data_end: float, declared: float, fps: float) -> str | None:
    """Why ``t`` cannot be served, when it lies after the last frame the file holds but well within its
    declared duration (a truncated or corrupt file); None otherwise."""
    tolerance = max(1.0, 2.0 / max(fps, 1e-3), 0.05 * declared)
    if data_end + tolerance < t < declared - tolerance:
        return (
            f"frames end at {data_end:.2f} s but the file declares {declared:.2f} s "
            f"(asked for {t:.2f} s): truncated or corrupt"
        )
    return None


def frame_rate(stream: Any, default: float) -> float:
    """The average frame rate; the guessed (nominal) one where the average is missing or implausible."""
    average = float(stream.average_rate) if stream.average_rate else 0.0
    guessed = float(stream.guessed_rate) if stream.guessed_rate else 0.0
    if average > 0 and (guessed <= 0 or average <= guessed * 1.01):
        return average
    return guessed if guessed > 0 else (average or default)
