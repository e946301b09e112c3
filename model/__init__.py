"""The dual-attention video encoder: one public surface for training, indexing and serving.

    from model import load_encoder
    enc = load_encoder("demo")
    enc.encode_text(["a red circle moves to the right"])

Names are imported on first use, so importing ``model`` (as ``tvr --help`` does) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CheckpointError": "backbone",
    "create_model": "checkpoint",
    "list_packaged": "checkpoint",
    "load_encoder": "checkpoint",
    "load_model": "checkpoint",
    "save_checkpoint": "checkpoint",
    "BackboneConfig": "config",
    "ConfigError": "config",
    "EncoderConfig": "config",
    "MethodConfig": "config",
    "add_config": "config",
    "get_config": "config",
    "list_configs": "config",
    "DualAttentionCLIP": "encoder",
    "Encoder": "encoder",
    "CLIP_MEAN": "preprocess",
    "CLIP_STD": "preprocess",
    "FramePreprocess": "preprocess",
    "preprocess_frames": "preprocess",
    "tokenize": "text_tower",
    "VideoTextEncoder": "protocols",
}
__all__ = [
    "BackboneConfig",
    "CLIP_MEAN",
    "CLIP_STD",
    "CheckpointError",
    "ConfigError",
    "DualAttentionCLIP",
    "Encoder",
    "EncoderConfig",
    "FramePreprocess",
    "MethodConfig",
    "VideoTextEncoder",
    "add_config",
    "create_model",
    "get_config",
    "list_configs",
    "list_packaged",
    "load_encoder",
    "load_model",
    "preprocess_frames",
    "save_checkpoint",
    "tokenize",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from .backbone import CheckpointError
    from .checkpoint import create_model, list_packaged, load_encoder, load_model, save_checkpoint
    from .config import BackboneConfig, ConfigError, EncoderConfig, MethodConfig, add_config, get_config, list_configs
    from .encoder import DualAttentionCLIP, Encoder
    from .preprocess import CLIP_MEAN, CLIP_STD, FramePreprocess, preprocess_frames
    from .protocols import VideoTextEncoder
    from .text_tower import tokenize
