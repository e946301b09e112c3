"""CLIP preprocessing of video frames: resize the shorter side (bicubic), centre-crop, normalise."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def preprocess_frames(frames: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) -> float32 (T, 3, image_size, image_size), CLIP-normalised."""
    return normalize_frames(resize_frames(frames, image_size))


def resize_frames(frames: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 (T, 3, image_size, image_size): the geometric half of preprocessing.

    Decoding workers stop here: a quarter of float32's bytes crosses to the encoder's process or device.
    """
    x = torch.as_tensor(frames)
    if x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 of shape [T, H, W, 3], got {list(x.shape)}")
    if x.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 (0-255), got {x.dtype}")
    x = x.permute(0, 3, 1, 2)  # (T, 3, H, W)
    x = TF.resize(x, [image_size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(x, [image_size, image_size]).contiguous()


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, S, S) from ``resize_frames`` -> float32, CLIP-normalised (on the tensor's device)."""
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 (0-255), got {frames.dtype}")
    x = frames.float().div_(255.0)
    return TF.normalize(x, CLIP_MEAN, CLIP_STD)
