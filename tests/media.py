"""Real encoded video files for tests, written with ``model.media.write_video`` (PyAV)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from model.media import write_video as write_media

# codec name -> (PyAV encoder, pixel format)
CODECS = {"h264": ("libx264", "yuv420p"), "vp9": ("libvpx-vp9", "yuv420p"), "mjpeg": ("mjpeg", "yuvj420p")}


def write_video(
    path: Path,
    frames: np.ndarray,
    fps: float = 10.0,
    codec: str = "h264",
    timestamps: list[float] | None = None,
) -> Path:
    """Encode uint8 frames (T, H, W, 3) into ``path`` (the container follows its suffix).

    ``timestamps`` (seconds, increasing) gives a variable frame rate; otherwise frames are 1/fps apart.
    Sizes are padded up to even numbers as yuv420p needs; the padding is black.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames, dtype=np.uint8)
    t, h, w, _ = frames.shape
    h2, w2 = h + h % 2, w + w % 2
    if (h2, w2) != (h, w):
        padded = np.zeros((t, h2, w2, 3), np.uint8)
        padded[:, :h, :w] = frames
        frames = padded
    encoder, pix_fmt = CODECS[codec]
    rate = Fraction(fps).limit_denominator(1000)
    write_media(path, frames, fps=rate, codec=encoder, pix_fmt=pix_fmt, timestamps=timestamps)
    return path


def moving_square(num_frames: int = 30, size: int = 64, color: tuple[int, int, int] = (255, 0, 0)) -> np.ndarray:
    """Frames of a square moving left to right on grey: distinct content per frame."""
    frames = np.full((num_frames, size, size, 3), 96, np.uint8)
    side = max(4, size // 5)
    for i in range(num_frames):
        x = int((size - side) * i / max(1, num_frames - 1))
        frames[i, size // 2 - side // 2 : size // 2 + side // 2, x : x + side] = color
    return frames
