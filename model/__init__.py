"""The dual-attention video encoder: one public surface for training, indexing and serving.

from model import load_encoder
enc = load_encoder("demo")
enc.encode_text(["a red circle moves to the right"])
"""

from .backbone import CheckpointError
from .checkpoint import create_model, list_packaged, load_encoder, load_model, save_checkpoint
from .config import (
    BackboneConfig,
    ConfigError,
    EncoderConfig,
    MethodConfig,
    add_config,
    get_config,
    list_configs,
)
from .encoder import DualAttentionCLIP, Encoder
from .preprocess import CLIP_MEAN, CLIP_STD, preprocess_frames
from .text_tower import tokenize

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "BackboneConfig",
    "CheckpointError",
    "ConfigError",
    "DualAttentionCLIP",
    "Encoder",
    "EncoderConfig",
    "MethodConfig",
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
