"""Frame preprocessing of a backbone: the geometric half (resize, then crop or pad to a square) and the
normalising half (scale to [0, 1], subtract a per-channel mean, divide by a per-channel std).

Each pretrained CLIP was trained with its own values: OpenAI's CLIP (the default here) resizes the shorter
side with bicubic filtering, centre-crops and normalises with CLIP_MEAN / CLIP_STD, while e.g. the LAION
ViT-L-14 tags use mean and std 0.5. open_clip records them per pretrained tag; ``FramePreprocess`` holds
them, and a model's are saved in its checkpoints (model/config.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import ConfigError

if TYPE_CHECKING:  # torch is imported where frames are resized: decoding processes never need it
    import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
INTERPOLATIONS = ("bicubic", "bilinear")
RESIZE_MODES = ("shortest", "longest", "squash")


@dataclass(frozen=True)
class FramePreprocess:
    """How uint8 RGB frames become the normalised square input of an image tower.

    Calling it runs both halves: uint8 (T, H, W, 3) -> float32 (T, 3, S, S). The halves are separate so
    that decoding workers can stop after ``resize`` (uint8, a quarter of float32's bytes) and the encoder's
    process or device runs ``normalize``.
    """

    image_size: int  # S: side in pixels of the square frames the image tower takes (its input size)
    mean: tuple[float, float, float] = CLIP_MEAN  # per RGB channel, subtracted from pixel values in [0, 1]
    std: tuple[float, float, float] = CLIP_STD  # per RGB channel, divides after the mean is subtracted
    interpolation: str = "bicubic"  # resampling filter of the resize: "bicubic" or "bilinear" (antialiased)
    # "shortest": shorter side to S, then centre crop; "longest": longer side to S, then centre pad with
    # black (pixel value 0, before normalisation); "squash": both sides to S, the aspect ratio is not kept
    resize_mode: str = "shortest"

    def __post_init__(self) -> None:
        # JSON gives lists: store tuples, so that equal values compare and hash equal
        object.__setattr__(self, "mean", _triple(self.mean, "mean"))
        object.__setattr__(self, "std", _triple(self.std, "std"))
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 1:
            raise ConfigError(f"preprocess image_size must be a positive integer, got {self.image_size!r}")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"preprocess std must be positive, got {self.std}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"preprocess interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}"
            )
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(
                f"preprocess resize_mode must be one of {', '.join(RESIZE_MODES)}, got {self.resize_mode!r}"
            )

    # --- values ------------------------------------------------------------------------------------------
    def is_default(self) -> bool:
        """True for OpenAI CLIP's preprocessing (what every checkpoint used before it was recorded)."""
        return self == FramePreprocess(self.image_size)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FramePreprocess:
        try:
            return cls(**data)
        except TypeError as exc:  # an unknown, misspelt or missing field
            raise ConfigError(f"preprocess {dict(data)!r}: {exc}") from None

    @classmethod
    def from_open_clip(cls, cfg: Mapping[str, Any], image_size: int) -> FramePreprocess:
        """From an open_clip preprocess config (``open_clip.get_model_preprocess_cfg(model)`` or a pretrained
        tag's entry): absent keys take open_clip's defaults, which are OpenAI CLIP's, as here."""
        size = cfg.get("size", image_size)
        sizes = tuple(size) if isinstance(size, Sequence) else (size, size)
        if len(set(sizes)) != 1 or int(sizes[0]) != image_size:
            raise ConfigError(f"open_clip preprocess size {size} does not match the model's input size {image_size}")
        fill = cfg.get("fill_color", 0)
        if fill not in (0, None):
            raise ConfigError(f"open_clip preprocess fill_color {fill} is not supported (only 0, black)")
        given = {key: cfg[key] for key in ("mean", "std", "interpolation", "resize_mode") if cfg.get(key) is not None}
        return cls(image_size=image_size, **given)

    # --- frames ------------------------------------------------------------------------------------------
    def __call__(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 frames (T, H, W, 3) -> float32 (T, 3, S, S), resized and normalised."""
        return self.normalize(self.resize(frames))

    def resize(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> uint8 (T, 3, S, S): the geometric half."""
        import torch
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        x = torch.as_tensor(frames)
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 of shape [T, H, W, 3], got {list(x.shape)}")
        if x.dtype != torch.uint8:
            raise ValueError(f"frames must be uint8 (0-255), got {x.dtype}")
        x = x.permute(0, 3, 1, 2)  # (T, 3, H, W)
        s = self.image_size
        filter_ = InterpolationMode.BILINEAR if self.interpolation == "bilinear" else InterpolationMode.BICUBIC
        if self.resize_mode == "squash":
            return TF.resize(x, [s, s], interpolation=filter_, antialias=True).contiguous()
        if self.resize_mode == "shortest":
            x = TF.resize(x, [s], interpolation=filter_, antialias=True)
            return TF.center_crop(x, [s, s]).contiguous()
        # longest, as open_clip's ResizeKeepRatio(longest=1) and CenterCropOrPad: sides rounded the same way
        h, w = x.shape[-2:]
        ratio = max(h / s, w / s)
        new_h, new_w = round(h / ratio), round(w / ratio)
        x = TF.resize(x, [new_h, new_w], interpolation=filter_, antialias=True)
        padding = [(s - new_w) // 2, (s - new_h) // 2, (s - new_w + 1) // 2, (s - new_h + 1) // 2]  # l, t, r, b
        return TF.pad(x, padding, fill=0).contiguous()

    def normalize(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, S, S) from ``resize`` -> float32, normalised (on the tensor's device)."""
        return _normalize(frames, self.mean, self.std)


def _triple(value: Any, name: str) -> tuple[float, float, float]:
    """Three floats, one per RGB channel (open_clip also allows one value for all three)."""
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    values = tuple(float(v) for v in value)
    if len(values) != 3:
        raise ConfigError(f"preprocess {name} must have 3 values (R, G, B), got {list(values)}")
    return values[0], values[1], values[2]


# --- OpenAI CLIP's preprocessing at a given size (callers that predate FramePreprocess) ---------------------
def preprocess_frames(frames: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) -> float32 (T, 3, image_size, image_size), CLIP-normalised."""
    return FramePreprocess(image_size)(frames)


def resize_frames(frames: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 (T, 3, image_size, image_size) as OpenAI CLIP: shorter side, bicubic,
    centre crop."""
    return FramePreprocess(image_size).resize(frames)


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, S, S) -> float32, normalised with CLIP_MEAN / CLIP_STD."""
    return _normalize(frames, CLIP_MEAN, CLIP_STD)


def _normalize(frames: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    import torch
    from torchvision.transforms.v2 import functional as TF

    if frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 (0-255), got {frames.dtype}")
    x = frames.float().div_(255.0)
    return TF.normalize(x, list(mean), list(std))
