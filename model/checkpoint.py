"""Checkpoints: the project's own format, the paper's reference format, and open_clip backbones.

Project checkpoint: one safetensors file whose metadata holds the encoder config as JSON. An *adapter*
checkpoint holds only the method's tensors (a few MB for ViT-B/32) and names its backbone (open_clip
architecture plus a pretrained tag, or a weights file by path and sha256); a *full* checkpoint also holds
the backbone, for models trained from scratch. A folder checkpoint is a folder with ``model.safetensors``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .backbone import (
    CheckpointError,
    arch_from_clip_state_dict,
    backbone_preprocess,
    build_clip,
    is_torchscript,
    load_clip_weights,
)
from .calibration import METADATA_KEY as CALIBRATION_KEY
from .calibration import ScoreCalibration
from .config import BackboneConfig, ConfigError, EncoderConfig, MethodConfig, get_config
from .encoder import DualAttentionCLIP, Encoder
from .text_inference import TextPrecision

FORMAT = "tvr-checkpoint/1"
FOLDER_FILE = "model.safetensors"
PACKAGED = Path(__file__).parent / "checkpoints"
_REFERENCE_LORA = re.compile(r"^clip\.(visual\.)?transformer\.resblocks\.(\d+)\.attn\.TVPt_LoRA_([ab])$")


def load_encoder(
    source: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    backbone_weights: str | None = None,
    text_precision: TextPrecision = "float32",
    **method_overrides: Any,
) -> Encoder:
    """An inference encoder from any checkpoint source.

    ``source`` is one of: a project checkpoint file or folder; the name of a packaged checkpoint (``demo``);
    a checkpoint saved by the paper's reference implementation (detected by its ``clip.`` keys); or a
    zero-shot backbone spec ``openclip:ARCH/TAG`` or ``openclip:ARCH/path/to/weights``.
    ``backbone_weights`` points an adapter checkpoint at a local copy of its backbone weights.
    ``text_precision`` (float32, bfloat16 or int8 on the CPU) trades query-encoding speed for exactness.
    """
    model = load_model(source, backbone_weights=backbone_weights, **method_overrides)
    checkpoint_id, legacy_ids = model.checkpoint_ids()
    return Encoder(model, checkpoint_id, device, text_precision=text_precision, legacy_checkpoint_ids=legacy_ids)


def load_model(
    source: str | os.PathLike[str], backbone_weights: str | None = None, **method_overrides: Any
) -> DualAttentionCLIP:
    """The trainable module behind load_encoder (training resumes and fine-tunes from it)."""
    text = str(source)
    if text.startswith("openclip:"):
        return _zero_shot_model(text[len("openclip:") :], method_overrides)
    path = resolve_checkpoint_path(source)
    if _is_safetensors(path):
        return _project_model(path, backbone_weights, method_overrides)
    return _reference_model(path, method_overrides)


def create_model(
    config: str | EncoderConfig, pretrained: str | None = None, **method_overrides: Any
) -> DualAttentionCLIP:
    """A fresh trainable model from a config name or object: untrained adapter, backbone from ``pretrained``.

    Its frame preprocessing is the config's when it names one, else the backbone's (a pretrained tag's own
    values; OpenAI CLIP's for local weights files and random weights).
    """
    config = get_config(config) if isinstance(config, str) else config
    if pretrained is not None:
        config.backbone.pretrained = pretrained
    _apply_overrides(config, method_overrides)
    clip = build_clip(config.backbone)
    if config.preprocess is None:
        config.preprocess = backbone_preprocess(clip)
    return DualAttentionCLIP(config, clip)


def list_packaged() -> list[str]:
    """Names of the checkpoints shipped inside the package (``demo``)."""
    return sorted(p.name for p in PACKAGED.glob("*") if (p / FOLDER_FILE).is_file()) if PACKAGED.is_dir() else []


def is_path_like(text: str) -> bool:
    """Whether a checkpoint value is written as a path (``./demo``, ``~/ckpt``, ``/abs``, ``runs/best``)
    rather than a bare name, which names a packaged checkpoint first."""
    separators = [os.sep] + ([os.altsep] if os.altsep else [])
    return text.startswith((".", "~")) or os.path.isabs(text) or any(sep in text for sep in separators)


def resolve_checkpoint_path(source: str | os.PathLike[str]) -> Path:
    """The checkpoint file a source names: a packaged name wins over a file or folder of that name in the
    working directory (write ``./demo`` for the local one); any other value is a local file, or a folder
    holding ``model.safetensors``. A ``Path`` object is always a local path."""
    text = str(source)
    packaged = list_packaged()
    if isinstance(source, str) and not is_path_like(text) and text in packaged:
        return PACKAGED / text / FOLDER_FILE
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / FOLDER_FILE).is_file():
            raise CheckpointError(
                f"checkpoint {text!r} is a folder without {FOLDER_FILE}: expected a checkpoint folder "
                f"(holding {FOLDER_FILE}) or a checkpoint file"
            )
        return path / FOLDER_FILE
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {text!r} not found: expected a checkpoint file or folder, a packaged name "
            f"({', '.join(packaged) or 'none installed'}) or openclip:ARCH/TAG"
        )
    return path


# --- project format ----------------------------------------------------------------------------------------
def save_checkpoint(
    model: DualAttentionCLIP,
    path: str | os.PathLike[str],
    full: bool | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` as a project checkpoint (a ``.safetensors`` file, or a folder); atomic.

    ``full`` defaults to True when the backbone has no pretrained source to rebuild it from. ``dtype``
    (e.g. ``torch.float16``) stores floating-point tensors in that type to halve a shipped file; they are
    loaded back into the model's own type.
    """
    if model.lora_folded:
        raise ValueError("cannot save a model whose LoRA was folded for inference")
    config = model.config
    if full is None:
        full = config.backbone.pretrained is None
    path = Path(path)
    target = path if path.suffix == ".safetensors" else path / FOLDER_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tensors = model.state_dict() if full else model.adapter_state_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    metadata = {"format": FORMAT, "full": json.dumps(full), "config": config.to_json()}
    if model.calibration is not None:
        metadata[CALIBRATION_KEY] = model.calibration.to_json()
    _write_file(tensors, metadata, target)
    if target.name == FOLDER_FILE:
        (target.parent / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return target


def _write_file(tensors: dict[str, torch.Tensor], metadata: dict[str, str], target: Path) -> None:
    """Write a safetensors file atomically: a temp file renamed over the old one."""
    tmp = target.with_name(target.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, target)


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A project checkpoint file's tensors and metadata."""
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {exc}") from None
    return tensors, metadata


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"  # 8-byte little-endian header size, then the JSON header


def _project_model(path: Path, backbone_weights: str | None, overrides: dict[str, Any]) -> DualAttentionCLIP:
    tensors, metadata = _read_file(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a tvr checkpoint (no '{FORMAT}' metadata)")
    config = EncoderConfig.from_dict(json.loads(metadata["config"]))
    _apply_overrides(config, overrides)
    full = json.loads(metadata.get("full", "false"))
    if full:
        config.backbone.pretrained = None  # the backbone comes from this file
    elif backbone_weights is not None:
        config.backbone.pretrained = backbone_weights
    _check_backbone_reachable(config.backbone, path)
    model = DualAttentionCLIP(config, build_clip(config.backbone))
    _load_tensors(model, tensors, full, str(path))
    if CALIBRATION_KEY in metadata:
        model.calibration = ScoreCalibration.from_json(metadata[CALIBRATION_KEY], str(path))
    return model


def write_calibration(
    source: str | os.PathLike[str], calibration: ScoreCalibration, output: str | os.PathLike[str] | None = None
) -> Path:
    """Store ``calibration`` in a project checkpoint (in place, or in a copy at ``output``: a file or a
    folder), replacing any it had; the tensors, and so the checkpoint id, stay as they are. Atomic."""
    path = resolve_checkpoint_path(source)
    tensors, metadata = _read_file(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a calibration is stored only in a tvr checkpoint (not a reference file)")
    metadata[CALIBRATION_KEY] = calibration.to_json()
    target = path if output is None else Path(output)
    if target.suffix != ".safetensors":
        target = target / FOLDER_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_file(tensors, metadata, target)
    config_file = path.parent / "config.json"
    if target.name == FOLDER_FILE and config_file.is_file() and target.parent != path.parent:
        (target.parent / "config.json").write_text(config_file.read_text())
    return target


def _check_backbone_reachable(backbone: BackboneConfig, path: Path) -> None:
    pretrained = backbone.pretrained
    if backbone.weights_sha256 and pretrained is not None and not Path(pretrained).expanduser().exists():
        raise CheckpointError(
            f"checkpoint {path} was trained on the backbone weights file {pretrained} "
            f"(sha256 {backbone.weights_sha256[:12]}...), which is not here: pass backbone_weights=PATH"
        )


def _load_tensors(model: DualAttentionCLIP, tensors: dict[str, torch.Tensor], full: bool, source: str) -> None:
    own = model.state_dict() if full else model.adapter_state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {source} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"checkpoint {source}: {key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}"
            )
    model.load_state_dict(tensors, strict=False)


def _apply_overrides(config: EncoderConfig, overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if not hasattr(config.method, key):
            raise ConfigError(
                f"unknown method option {key!r}; known: {[f.name for f in dataclasses.fields(MethodConfig)]}"
            )
        setattr(config.method, key, value)


# --- zero-shot backbones ---------------------------------------------------------------------------------
def _zero_shot_model(spec: str, overrides: dict[str, Any]) -> DualAttentionCLIP:
    arch, _, pretrained = spec.partition("/")
    if not arch or not pretrained:
        raise ConfigError(f"backbone spec 'openclip:{spec}' must be openclip:ARCH/TAG or openclip:ARCH/PATH")
    try:
        config = get_config(arch)
    except ConfigError:
        config = EncoderConfig(name=arch, backbone=BackboneConfig(arch=arch))
    local = Path(pretrained).expanduser()
    if not local.exists() and (pretrained.startswith(("/", ".", "~")) or "/" in pretrained):
        raise CheckpointError(f"backbone weights file {pretrained} does not exist")
    quick_gelu = _zero_shot_quick_gelu(config, arch, pretrained, local)
    # A shipped config may carry an inline architecture (e.g. "tiny"): keep it, swap in the weights.
    config.backbone = BackboneConfig(arch=config.backbone.arch, pretrained=pretrained, quick_gelu=quick_gelu)
    config.method.zero_shot = True
    config.name = f"openclip:{spec}"
    _apply_overrides(config, overrides)
    clip = build_clip(config.backbone)
    if not local.exists() or config.preprocess is None:
        # a tag: open_clip's values for it; a local file: the arch config's if it names any, else CLIP's
        config.preprocess = backbone_preprocess(clip)
    return DualAttentionCLIP(config, clip)


def _zero_shot_quick_gelu(config: EncoderConfig, arch: str, pretrained: str, local: Path) -> bool:
    """QuickGELU as the weights were trained: OpenAI files and ``-quickgelu`` names use it; tags say."""
    if arch.endswith("-quickgelu"):
        return True
    if local.is_file():
        return is_torchscript(local) or isinstance(config.backbone.arch, dict) and config.backbone.quick_gelu
    return bool(open_clip.get_pretrained_cfg(arch, pretrained).get("quick_gelu", pretrained == "openai"))


# --- the paper's reference format ------------------------------------------------------------------------
def _reference_model(path: Path, overrides: dict[str, Any]) -> DualAttentionCLIP:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {path} cannot be read (corrupt, truncated, or not a checkpoint): {exc}"
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not any(str(k).startswith("clip.") for k in state):
        raise CheckpointError(
            f"{path} is neither a tvr checkpoint nor a reference checkpoint (a state dict with 'clip.' keys)"
        )
    state = {k[len("module.") :] if k.startswith("module.") else k: v.float() for k, v in state.items()}
    clip_state: dict[str, torch.Tensor] = {}
    adapter: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _REFERENCE_LORA.match(key)
        if match:
            tower = "visual_lora" if match.group(1) else "text_lora"
            adapter[f"{tower}.{match.group(2)}.{match.group(3)}"] = value
        elif key == "clip.visual.prompt_embeddings":
            adapter["prompts"] = value.reshape(value.shape[-2], value.shape[-1])
        elif key == "clip.visual.frame_positional_embedding.weight":
            continue  # created by the reference but never used
        elif key.startswith("clip."):
            clip_state[key[len("clip.") :]] = value
    arch = arch_from_clip_state_dict(clip_state)
    method = _reference_method(arch, adapter, _reference_sidecar(path))
    config = EncoderConfig(
        name=f"reference:{path.name}",
        backbone=BackboneConfig(arch=arch, pretrained=None, quick_gelu=True),
        method=method,
    )
    _apply_overrides(config, overrides)
    model = DualAttentionCLIP(config, build_clip(config.backbone))
    load_clip_weights(model.clip, clip_state, str(path))
    _load_tensors(model, adapter, full=False, source=str(path))
    return model


def _reference_method(arch: dict[str, Any], adapter: dict[str, torch.Tensor], args: dict[str, Any]) -> MethodConfig:
    """The paper's defaults, with sizes read off the tensors and any run arguments found beside the file."""
    method = MethodConfig()
    if "visual_lora.0.a" in adapter:
        method.lora_rank = int(adapter["visual_lora.0.a"].shape[0])
    method.num_prompts = int(adapter["prompts"].shape[0]) if "prompts" in adapter else 0
    patches = (arch["vision_cfg"]["image_size"] // arch["vision_cfg"]["patch_size"]) ** 2
    method.sel_drop = 10 if patches == 49 else max(0, round(patches * 10 / 49))  # the paper's 10 of 49
    if "max_frames" in args:
        method.num_frames = int(args["max_frames"])
    if "max_words" in args:
        method.max_words = int(args["max_words"])
    if "global_visual_prompt_length" in args:
        method.num_prompts = int(args["global_visual_prompt_length"])
    if "sel_layer" in args:
        method.sel_layer = int(args["sel_layer"])
    if "r" in args:
        method.sel_drop = int(args["r"])
    if "alpha" in args:
        method.sel_alpha = float(args["alpha"])
    if "seg_layer" in args:
        method.merge_layers = [int(v) for v in str(args["seg_layer"]).split("-")]
    if "seg_num" in args:
        method.merge_units = [int(v) for v in str(args["seg_num"]).split("-")]
    return method


def _reference_sidecar(path: Path) -> dict[str, Any]:
    """The reference run's arguments, when a JSON file beside the checkpoint records them.

    Looked for in ``<checkpoint stem>.json`` and ``meta.json``, as ``{"hyperparameters": {...}}`` with the
    reference's argument names (``r``, ``alpha``, ``sel_layer``, ``seg_layer``, ``seg_num``, ...).
    """
    for candidate in (path.with_suffix(".json"), path.parent / "meta.json"):
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text())
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict) and isinstance(data.get("hyperparameters"), dict):
                return data["hyperparameters"]
    return {}
