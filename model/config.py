"""Encoder configurations: the backbone to build and the method's hyperparameters, kept as named JSON files.

A config file (``model/configs/NAME.json``) looks like::

    {"backbone": {"arch": "ViT-B-32", "pretrained": "openai"},
     "method": {"lora_rank": 8, "num_prompts": 8, ...},
     "preprocess": {"image_size": 224, "mean": [0.5, 0.5, 0.5], ...}}

``arch`` is an open_clip model name, or an inline open_clip model config (``embed_dim``, ``vision_cfg``,
``text_cfg``) for architectures open_clip does not ship, such as the tiny one used by tests. ``preprocess``
(model/preprocess.py) is optional: without it a new model takes its backbone's (open_clip's values for the
pretrained tag; OpenAI CLIP's otherwise), and a checkpoint written before it was recorded OpenAI CLIP's.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # model/preprocess.py imports ConfigError from here: FramePreprocess is imported when used
    from .preprocess import FramePreprocess

CONFIG_DIR = Path(__file__).parent / "configs"
_extra_configs: dict[str, dict[str, Any]] = {}

TRAINABLE_GROUPS = ("lora", "prompts", "temporal", "all")


class ConfigError(ValueError):
    """A config name, file or value that cannot be used."""


@dataclass
class MethodConfig:
    """Hyperparameters of the dual-attention encoder (docs/METHOD.md); defaults are the paper's."""

    num_frames: int = 12  # T: frames per clip; every video input must have exactly this many
    max_words: int = 32  # text length in tokens, [SOT] and [EOT] included
    lora_rank: int = 8  # r of the LoRA pair on q/k/v in every attention layer of both towers
    num_prompts: int = 8  # G: global video prompt tokens
    sel_layer: int | None = 6  # patch selection runs before this block; None switches selection off
    sel_drop: int = 10  # patches dropped per frame at selection (N - sel_drop are kept)
    sel_alpha: float = 0.4  # score = alpha * global attention + (1 - alpha) * frame-CLS attention
    merge_layers: list[int] = field(default_factory=lambda: [8, 9, 10])  # blocks before which units merge
    merge_units: list[int] = field(default_factory=lambda: [6, 3, 1])  # units after each merge
    merge_grouping: str = "strided"  # "strided" (unit j takes j, j+S, ...) or "contiguous"
    temporal_embedding: bool = False  # learned per-frame table added after ln_pre (docs/METHOD.md section 7)
    zero_shot: bool = False  # mean of per-frame CLIP embeddings instead of the global token
    trainable: list[str] = field(default_factory=lambda: ["lora", "prompts"])  # groups of TRAINABLE_GROUPS

    def validate(self, num_layers: int | None = None, num_patches: int | None = None) -> None:
        """Raise ConfigError when the values cannot describe a working encoder."""
        if self.num_frames < 1:
            raise ConfigError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.max_words < 3:
            raise ConfigError(f"max_words must be >= 3 (SOT, one token, EOT), got {self.max_words}")
        if len(self.merge_layers) != len(self.merge_units):
            raise ConfigError(
                f"merge_layers {self.merge_layers} and merge_units {self.merge_units} must have the same length"
            )
        if list(self.merge_layers) != sorted(set(self.merge_layers)):
            raise ConfigError(f"merge_layers must be strictly increasing, got {self.merge_layers}")
        units = self.num_frames
        for layer, target in zip(self.merge_layers, self.merge_units, strict=True):
            if target < 1 or units % target != 0:
                raise ConfigError(
                    f"cannot merge {units} units into {target} before block {layer}: "
                    "the unit count must divide the current one"
                )
            units = target
        if self.merge_grouping not in ("strided", "contiguous"):
            raise ConfigError(f"merge_grouping must be 'strided' or 'contiguous', got {self.merge_grouping!r}")
        if self.sel_layer is not None:
            if self.sel_layer < 1:
                raise ConfigError(
                    f"sel_layer must be >= 1 (it uses the previous block's attention), got {self.sel_layer}"
                )
            if self.merge_layers and self.sel_layer > self.merge_layers[0]:
                raise ConfigError(
                    f"sel_layer {self.sel_layer} must not come after the first merge layer {self.merge_layers[0]}"
                )
            if self.num_prompts < 1:
                raise ConfigError("patch selection needs at least one global prompt token (num_prompts >= 1)")
            if not 0.0 <= self.sel_alpha <= 1.0:
                raise ConfigError(f"sel_alpha must be in [0, 1], got {self.sel_alpha}")
        if num_layers is not None:
            for layer in [*self.merge_layers, *([self.sel_layer] if self.sel_layer is not None else [])]:
                if not 0 < layer < num_layers:
                    raise ConfigError(f"layer index {layer} is outside the backbone's blocks 1..{num_layers - 1}")
        if num_patches is not None and self.sel_layer is not None and not 0 <= self.sel_drop < num_patches:
            raise ConfigError(f"sel_drop must be in [0, {num_patches}) for {num_patches} patches, got {self.sel_drop}")
        unknown = set(self.trainable) - set(TRAINABLE_GROUPS)
        if unknown:
            raise ConfigError(f"unknown trainable groups {sorted(unknown)}; expected some of {TRAINABLE_GROUPS}")


@dataclass
class BackboneConfig:
    """Which CLIP to build and where its weights come from (weights are separate from architecture)."""

    arch: str | dict[str, Any] = "ViT-B-32"  # open_clip model name, or an inline open_clip model config
    pretrained: str | None = None  # open_clip pretrained tag, a local weights file, or None (random)
    quick_gelu: bool = True  # OpenAI CLIP and reference checkpoints use QuickGELU
    weights_sha256: str | None = None  # recorded for local weights files, checked on load

    @property
    def arch_name(self) -> str:
        return self.arch if isinstance(self.arch, str) else "custom"


@dataclass
class EncoderConfig:
    """A whole encoder: the backbone and the method on top of it."""

    name: str = "custom"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    # How frames are resized and normalised for the image tower. None until a model is built from the
    # config (create_model: the backbone's; DualAttentionCLIP: OpenAI CLIP's at the input size), then set.
    preprocess: FramePreprocess | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str | None = None) -> EncoderConfig:
        from .preprocess import FramePreprocess

        data = copy.deepcopy(data)
        label = name or data.get("name", "?")
        try:
            backbone = BackboneConfig(**data.get("backbone", {}))
            method = MethodConfig(**data.get("method", {}))
        except TypeError as exc:  # an unknown or misspelt field
            raise ConfigError(f"config {label!r}: {exc}") from None
        preprocess = data.get("preprocess")
        try:
            frames = None if preprocess is None else FramePreprocess.from_dict(preprocess)
        except ConfigError as exc:
            raise ConfigError(f"config {label!r}: {exc}") from None
        return cls(name=name or data.get("name", "custom"), backbone=backbone, method=method, preprocess=frames)


def list_configs() -> list[str]:
    """Names accepted by get_config: the shipped JSON files and those added with add_config."""
    return sorted({p.stem for p in CONFIG_DIR.glob("*.json")} | set(_extra_configs))


def add_config(name: str, data: dict[str, Any]) -> None:
    """Register a config under a name (as open_clip's add_model_config)."""
    EncoderConfig.from_dict(data, name)  # fail now, not at first use
    _extra_configs[name] = copy.deepcopy(data)


def get_config(name_or_path: str | Path, **method_overrides: Any) -> EncoderConfig:
    """The config of a shipped name, a registered name or a JSON file path, with method fields overridden."""
    text_name = str(name_or_path)
    if text_name in _extra_configs:
        data = copy.deepcopy(_extra_configs[text_name])
        name = text_name
    else:
        path = Path(name_or_path)
        if path.suffix != ".json":
            path = CONFIG_DIR / f"{text_name}.json"
        if not path.is_file():
            raise ConfigError(f"unknown encoder config {text_name!r}; known configs: {', '.join(list_configs())}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
        name = path.stem
    config = EncoderConfig.from_dict(data, name)
    for key, value in method_overrides.items():
        if not hasattr(config.method, key):
            raise ConfigError(f"unknown method option {key!r}")
        setattr(config.method, key, value)
    return config
