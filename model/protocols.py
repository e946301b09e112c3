"""What the indexer and the service need of an encoder, as a typing Protocol (``model.Encoder`` is one).

Code that only encodes (and tests that stand in a fake encoder) can depend on ``VideoTextEncoder`` rather
than on ``Encoder`` and the modules behind it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from .calibration import ScoreCalibration
from .preprocess import FramePreprocess

if TYPE_CHECKING:
    from .encoder import Encoder


@runtime_checkable
class VideoTextEncoder(Protocol):
    """Frames and texts in, L2-normalised float32 embeddings of one space out."""

    checkpoint_id: str  # names the weights and preprocessing: embeddings of equal ids are comparable
    # ids the same weights had before the preprocessing was part of the id (re-encode what they made)
    legacy_checkpoint_ids: tuple[str, ...]
    num_frames: int  # T: frames per video input
    image_size: int  # S: frame side in pixels
    embed_dim: int  # E: embedding size
    device: torch.device  # where encoding runs
    preprocess: FramePreprocess  # uint8 (T, H, W, 3) frames -> (T, 3, S, S); .resize and .normalize halves
    calibration: ScoreCalibration | None  # text-query cosine -> confidence; None: the checkpoint has none

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) frames from ``preprocess`` -> (B, E)."""
        ...

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """B texts -> (B, E)."""
        ...


if TYPE_CHECKING:

    def _encoder_is_a_video_text_encoder(encoder: Encoder) -> VideoTextEncoder:
        return encoder  # mypy checks here that Encoder satisfies the protocol
