"""Cutting a video into clips: one clip for a short video, overlapping windows for a long one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClipPolicy:
    """How a video of a given duration becomes clips (seconds).

    A video up to ``single_max`` seconds is one clip, so a search result is the whole video. A longer video
    becomes windows of ``window`` seconds starting every ``stride`` seconds (half-overlapping by default,
    so every moment lies well inside some window), the last one ending at the video's end.
    """

    single_max: float = 30.0
    window: float = 10.0
    stride: float = 5.0

    def __post_init__(self) -> None:
        if not (self.window > 0 and self.stride > 0):
            raise ValueError(f"window and stride must be > 0, got window={self.window}, stride={self.stride}")
        if self.stride > self.window:
            raise ValueError(f"stride {self.stride} s > window {self.window} s would leave gaps between clips")
        if self.single_max < self.window:
            raise ValueError(f"single_max {self.single_max} s must be at least the window {self.window} s")


def clip_windows(duration: float, policy: ClipPolicy = ClipPolicy()) -> list[tuple[float, float]]:
    """(start, end) of each clip of a video lasting ``duration`` seconds, in time order."""
    duration = max(0.0, float(duration))
    if duration <= policy.single_max:
        return [(0.0, duration)]
    windows: list[tuple[float, float]] = []
    k = 0
    while k * policy.stride + policy.window < duration - 1e-6:
        start = k * policy.stride
        windows.append((start, start + policy.window))
        k += 1
    windows.append((duration - policy.window, duration))  # the last window reaches the end
    return windows
