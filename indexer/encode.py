"""The encoding stage: decoded clips (uint8 frames) in, L2-normalised embeddings out, on the encoder's device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .decode import DecodedClip
from .errors import IndexerError

if TYPE_CHECKING:
    from model.protocols import VideoTextEncoder


def check_device(device: str) -> None:
    """Fail early with a clear message when ``device`` cannot be used."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise IndexerError(f"--device {device}: CUDA is not available here (use --device cpu)")
    elif device != "cpu":
        raise IndexerError(f"--device {device!r}: expected cpu or cuda")


def encode_clips(encoder: VideoTextEncoder, clips: Sequence[DecodedClip]) -> np.ndarray:
    """float32 (len(clips), embed_dim): the frames are normalised where the encoder runs (a quarter of the
    bytes cross to a GPU as uint8)."""
    import torch

    frames = torch.from_numpy(np.stack([clip.frames for clip in clips]))
    frames = encoder.preprocess.normalize(frames.to(encoder.device))
    return encoder.encode_video(frames).float().cpu().numpy()
