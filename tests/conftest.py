"""Shared fixtures: tiny models and their inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/media.py and other helpers import as top-level modules

from model import DualAttentionCLIP, create_model  # noqa: E402


def randomise_adapter(model: DualAttentionCLIP, seed: int = 0) -> DualAttentionCLIP:
    """Give LoRA B (zero at init), prompts and the temporal table random values, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.startswith("clip."):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return model


@pytest.fixture
def tiny_model() -> DualAttentionCLIP:
    torch.manual_seed(0)
    return create_model("tiny").eval()


@pytest.fixture
def trained_tiny_model() -> DualAttentionCLIP:
    torch.manual_seed(0)
    return randomise_adapter(create_model("tiny").eval())


def random_frames(batch: int = 2, frames: int = 12, size: int = 64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, size, size, generator=generator)
