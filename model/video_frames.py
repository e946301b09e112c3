"""A decoded frame as it is shown, and the three things the project makes of it.

A decoder gives frames as stored: maybe rotated (phones store landscape sensor frames with a display
rotation), maybe with non-square pixels, in YUV of some colour matrix, range and bit depth. A
``DisplayFrame`` knows how the frame is meant to be shown and gives:

- ``rgb()``: the whole frame upright at its display size, uint8 (H, W, 3) (training, tests, users);
- ``for_encoder(preprocess)``: the encoder's uint8 (3, S, S) input, resized as ``preprocess`` says;
- ``thumbnail(width)``: a small upright RGB image for a JPEG.

``AVFrame`` (PyAV) converts YUV straight to the size wanted in libswscale, with the frame's colour matrix
and range (an untagged HD frame is BT.709, as players assume); when it scales, with full chroma precision
and accurate rounding: the result is within about one grey level (mean; 5 at most on a test image) of
converting the whole frame and resizing it with torchvision, at a quarter of the cost. ``ArrayFrame``
wraps an RGB array (the decord backend) and resizes with torchvision.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .preprocess import FramePreprocess

if TYPE_CHECKING:
    import av

HD_MIN_HEIGHT = 720  # an untagged frame at least this tall is taken as BT.709, a smaller one as BT.601


class DisplayFrame(Protocol):
    time: float  # seconds from the first frame of the stream

    def rgb(self) -> np.ndarray:
        """uint8 (H, W, 3): the whole frame, upright, at its display size."""
        ...

    def for_encoder(self, preprocess: FramePreprocess) -> np.ndarray:
        """uint8 (3, S, S): the encoder's input before normalisation."""
        ...

    def thumbnail(self, width: int) -> np.ndarray:
        """uint8 (h, w, 3), upright: ``width`` pixels wide at most (never enlarged)."""
        ...


def display_size(width: int, height: int, sample_aspect: Fraction | None, rotation: int) -> tuple[int, int]:
    """(width, height) a frame is shown at: non-square pixels widened (or narrowed), then rotated."""
    if sample_aspect is not None and sample_aspect > 0 and sample_aspect != 1:
        width = max(1, round(width * sample_aspect))
    return (height, width) if rotation % 180 == 90 else (width, height)


def resize_plan(width: int, height: int, preprocess: FramePreprocess) -> tuple[int, int, tuple[int, int, int, int]]:
    """How an upright ``width`` x ``height`` image becomes S x S: the size to scale it to, then the crop
    (``shortest``: a centre crop) or the padding (``longest``: a centre pad) as (left, top, right, bottom);
    the same rounding as torchvision's ``resize`` and ``center_crop`` in ``FramePreprocess.resize``."""
    s = preprocess.image_size
    if preprocess.resize_mode == "squash":
        return s, s, (0, 0, 0, 0)
    if preprocess.resize_mode == "shortest":
        if width <= height:
            new_w, new_h = s, int(s * height / width)
        else:
            new_w, new_h = int(s * width / height), s
        left, top = int(round((new_w - s) / 2.0)), int(round((new_h - s) / 2.0))
        return new_w, new_h, (left, top, new_w - s - left, new_h - s - top)
    ratio = max(height / s, width / s)
    new_w, new_h = round(width / ratio), round(height / ratio)
    return new_w, new_h, (-((s - new_w) // 2), -((s - new_h) // 2), -((s - new_w + 1) // 2), -((s - new_h + 1) // 2))


def crop_or_pad(image: np.ndarray, edges: tuple[int, int, int, int]) -> np.ndarray:
    """uint8 (H, W, 3) with ``edges`` (left, top, right, bottom) removed, or added as black where negative."""
    left, top, right, bottom = edges
    h, w = image.shape[:2]
    if min(edges) >= 0:
        return image[top : h - bottom, left : w - right]
    out = np.zeros((h - top - bottom, w - left - right, 3), np.uint8)
    out[-top : -top + h, -left : -left + w] = image
    return out


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (degrees counterclockwise, as FFmpeg's display matrix gives it)."""
    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


class AVFrame:
    """A PyAV ``VideoFrame`` with its display rotation and pixel aspect ratio."""

    def __init__(self, frame: av.VideoFrame, time: float, sample_aspect: Fraction | None, rotation: int) -> None:
        self.frame, self.time = frame, time
        self.sample_aspect, self.rotation = sample_aspect, rotation
        self.width, self.height = display_size(frame.width, frame.height, sample_aspect, rotation)

    def _scaled(self, width: int, height: int, interpolation: str = "bicubic") -> np.ndarray:
        """uint8 (height, width, 3) upright: scaled in libswscale, rotated after."""
        from av.video.reformatter import ColorRange, Colorspace, Interpolation

        stored_w, stored_h = (height, width) if self.rotation % 180 == 90 else (width, height)
        colorspace = self.frame.colorspace
        if colorspace in (None, 0, 2):  # untagged (or RGB): the convention of players, by frame height
            colorspace = Colorspace.ITU709 if self.frame.height >= HD_MIN_HEIGHT else Colorspace.ITU601
        filter_ = Interpolation.BILINEAR if interpolation == "bilinear" else Interpolation.BICUBIC
        if (stored_w, stored_h) != (self.frame.width, self.frame.height):  # scaling: chroma at full precision
            filter_ |= Interpolation.FULL_CHR_H_INT | Interpolation.FULL_CHR_H_INP | Interpolation.ACCURATE_RND
        full_range = self.frame.color_range == ColorRange.JPEG or self.frame.format.name.startswith("yuvj")
        try:
            image = self.frame.reformat(
                width=stored_w,
                height=stored_h,
                format="rgb24",
                src_colorspace=colorspace,
                dst_colorspace=colorspace,
                interpolation=filter_,
                src_color_range=ColorRange.JPEG if full_range else ColorRange.MPEG,
                dst_color_range=ColorRange.JPEG,
                threads=1,
            ).to_ndarray()
        except ValueError as exc:  # a pixel format or colorspace libswscale cannot convert
            raise ValueError(f"cannot convert a {self.frame.format.name} frame to RGB ({exc})") from None
        return upright(image, self.rotation)

    def rgb(self) -> np.ndarray:
        return self._scaled(self.width, self.height)

    def for_encoder(self, preprocess: FramePreprocess) -> np.ndarray:
        new_w, new_h, edges = resize_plan(self.width, self.height, preprocess)
        image = crop_or_pad(self._scaled(new_w, new_h, preprocess.interpolation), edges)
        return np.ascontiguousarray(image.transpose(2, 0, 1))

    def thumbnail(self, width: int) -> np.ndarray:
        if self.width <= width:
            return self.rgb()
        return self._scaled(width, max(1, round(self.height * width / self.width)), "bilinear")


class ArrayFrame:
    """An RGB frame as decoded (not yet rotated or widened), resized with torchvision."""

    def __init__(self, image: np.ndarray, time: float, sample_aspect: Fraction | None, rotation: int) -> None:
        self.image, self.time = image, time
        self.sample_aspect, self.rotation = sample_aspect, rotation
        h, w = image.shape[:2]
        self.width, self.height = display_size(w, h, sample_aspect, rotation)

    def rgb(self) -> np.ndarray:
        image = self.image
        stored_w = self.height if self.rotation % 180 == 90 else self.width
        if image.shape[1] != stored_w:  # non-square pixels
            image = _resize_rgb(image, image.shape[0], stored_w)
        return upright(image, self.rotation)

    def for_encoder(self, preprocess: FramePreprocess) -> np.ndarray:
        return preprocess.resize(self.rgb()[None])[0].numpy()

    def thumbnail(self, width: int) -> np.ndarray:
        image = self.rgb()
        if image.shape[1] <= width:
            return image
        return _resize_rgb(image, max(1, round(image.shape[0] * width / image.shape[1])), width)


def _resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    import torch
    from torchvision.transforms.v2 import functional as TF

    x: Any = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return TF.resize(x, [height, width], antialias=True).permute(1, 2, 0).contiguous().numpy()
