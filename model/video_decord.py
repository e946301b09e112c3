"""decord decoding: a frame index built when the file is opened, then batch reads of whole RGB frames."""

from __future__ import annotations

import time as clock
from collections.abc import Callable
from fractions import Fraction
from typing import Any, TypeVar

import numpy as np

from .video_frames import ArrayFrame, DisplayFrame

T = TypeVar("T")
TIME_EPS = 1e-4  # as the PyAV backend: a frame at time f is shown at time t when f <= t + TIME_EPS


class DecordFailed(Exception):
    """decord could not do what PyAV may still do; the reader falls back."""


class DecordBackend:
    name = "decord"

    def __init__(
        self,
        path: str,
        stored_size: tuple[int, int],
        sample_aspect: Fraction | None,
        rotation: int,
        threads: int = 0,
    ) -> None:
        import decord

        self.path = path
        self.stored_size = stored_size  # (height, width) of the frames as decoded, before rotation
        self.sample_aspect, self.rotation = sample_aspect, rotation
        self.timings = {"open": 0.0, "decode": 0.0}
        started = clock.perf_counter()
        try:
            self._reader: Any = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
            count = len(self._reader)
            if count == 0:
                raise RuntimeError("no frames in decord's index")
            stamps = np.asarray(self._reader.get_frame_timestamp(np.arange(count)), dtype=np.float64)
        except Exception as exc:
            raise DecordFailed(f"{type(exc).__name__}: {first_line(exc)}") from None
        finally:
            self.timings["open"] += clock.perf_counter() - started
        self.num_frames = count
        self._starts = stamps[:, 0] - stamps[0, 0]

    @property
    def data_end(self) -> float:
        return float(self._starts[-1])

    def sample(self, times: np.ndarray, convert: Callable[[int, DisplayFrame], T]) -> list[T]:
        index = np.searchsorted(self._starts, times + TIME_EPS, side="right") - 1
        index = np.clip(index, 0, len(self._starts) - 1)
        unique, inverse = np.unique(index, return_inverse=True)
        started = clock.perf_counter()
        try:
            batch = self._reader.get_batch(unique.tolist()).asnumpy()
        except Exception as exc:
            raise DecordFailed(f"{type(exc).__name__}: {first_line(exc)}") from None
        finally:
            self.timings["decode"] += clock.perf_counter() - started
        if batch.shape[1:3] != self.stored_size:
            raise DecordFailed(f"decord gave frames of shape {batch.shape[1:]}")
        frames = [
            ArrayFrame(image, float(self._starts[i]), self.sample_aspect, self.rotation)
            for i, image in zip(unique, batch, strict=True)
        ]
        return [convert(k, frames[j]) for k, j in enumerate(inverse.reshape(-1))]

    def close(self) -> None:
        self._reader = None


def first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__
