"""Building the frozen CLIP backbone with open_clip, and reading its weights from the formats users have."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

from .config import BackboneConfig, ConfigError
from .files import sha256_of_file
from .preprocess import FramePreprocess

log = logging.getLogger(__name__)

# Keys of OpenAI-format state dicts that are buffers of the JIT archive, not parameters.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


class CheckpointError(ValueError):
    """A weights or checkpoint file that cannot be read or does not fit the model."""


def build_clip(backbone: BackboneConfig) -> CLIP:
    """The open_clip CLIP model a backbone config names, with its pretrained weights if it names any."""
    pretrained = backbone.pretrained
    path = Path(pretrained).expanduser() if pretrained is not None else None
    local = path is not None and path.exists()
    if isinstance(backbone.arch, dict):
        model = _clip_from_arch_dict(backbone.arch, backbone.quick_gelu)
        if pretrained is not None and not local:
            raise ConfigError(f"an inline architecture takes a local weights file, not the tag {pretrained!r}")
    elif pretrained is None or local:
        model = _create(backbone.arch, None, backbone.quick_gelu)
    else:
        # An open_clip pretrained tag: open_clip downloads (or finds in its cache) and checks the file.
        model = _create(backbone.arch, pretrained, backbone.quick_gelu)
    if path is not None and local:
        digest = sha256_of_file(path)
        if backbone.weights_sha256 and backbone.weights_sha256 != digest:
            raise CheckpointError(
                f"weights file {path} has sha256 {digest[:12]}..., but the checkpoint was trained on "
                f"{backbone.weights_sha256[:12]}...: pass the backbone weights it was trained with"
            )
        backbone.weights_sha256 = digest
        load_clip_weights(model, read_clip_state_dict(path), source=str(path))
    _check_supported(model, backbone.arch_name)
    return model.eval()


def input_size(model: CLIP) -> int:
    """The side in pixels of the square images the image tower takes."""
    size = model.visual.image_size
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ConfigError(f"the image tower takes {size[0]}x{size[1]} images: only square inputs are supported")
        return int(size[0])
    return int(size)


def backbone_preprocess(model: CLIP) -> FramePreprocess:
    """The preprocessing open_clip attached to ``model``: a pretrained tag's own values when it was created
    from one; OpenAI CLIP's for random weights, local weights files and inline architectures."""
    return FramePreprocess.from_open_clip(open_clip.get_model_preprocess_cfg(model), input_size(model))


def _create(arch: str, pretrained: str | None, quick_gelu: bool) -> CLIP:
    if arch not in open_clip.list_models():
        raise ConfigError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
    try:
        model = open_clip.create_model(arch, pretrained=pretrained, force_quick_gelu=quick_gelu)
    except RuntimeError as exc:  # open_clip raises RuntimeError for unknown tags and failed downloads
        raise CheckpointError(f"could not load open_clip weights {arch}/{pretrained}: {exc}") from None
    if not isinstance(model, CLIP):
        raise ConfigError(f"{arch} is not a CLIP with a ViT image tower and a CLIP text tower")
    return model


def _clip_from_arch_dict(arch: dict[str, Any], quick_gelu: bool) -> CLIP:
    try:
        return CLIP(
            embed_dim=arch["embed_dim"],
            vision_cfg=CLIPVisionCfg(**arch["vision_cfg"]),
            text_cfg=CLIPTextCfg(**arch["text_cfg"]),
            quick_gelu=quick_gelu,
        )
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"inline architecture needs embed_dim, vision_cfg and text_cfg: {exc}") from None


def _check_supported(model: CLIP, arch: str) -> None:
    visual = model.visual
    if not isinstance(visual, VisionTransformer):
        raise ConfigError(f"{arch}: the dual-attention encoder needs a ViT image tower")
    if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
        raise ConfigError(f"{arch}: only class-token pooling ViTs are supported")
    for block in [*visual.transformer.resblocks, *model.transformer.resblocks]:
        if not isinstance(block, ResidualAttentionBlock) or not block.attn._qkv_same_embed_dim:
            raise ConfigError(f"{arch}: attention blocks must be open_clip's ResidualAttentionBlock")


def read_clip_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A CLIP state dict from a local file: OpenAI's TorchScript archive, a torch state dict, or safetensors."""
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    state: Any  # a file may hold anything: checked below
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"cannot read safetensors weights {path}: {exc}") from None
    else:
        state = _read_torch_file(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"weights file {path} holds no state dict")
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    for key in _OPENAI_EXTRA_KEYS:
        state.pop(key, None)
    return state


def _read_torch_file(path: Path) -> Any:
    if is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location="cpu").state_dict()
        except RuntimeError as exc:
            raise CheckpointError(f"cannot read TorchScript weights {path}: {exc}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read weights file {path} (corrupt, or not a torch file?): {exc}") from None


def is_torchscript(path: Path) -> bool:
    """True for archives written by torch.jit.save (they hold a code/ folder), as OpenAI's CLIP files are."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_clip_weights(model: CLIP, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a full CLIP state dict into ``model``, naming what does not fit."""
    own = model.state_dict()
    # TorchScript archives also save non-persistent buffers (the causal attn_mask): not weights.
    buffers = {name for name, _ in model.named_buffers()}
    state = {k: v for k, v in state.items() if k in own or k not in buffers}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
        if unexpected:
            detail.append(f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
        if wrong:
            k = wrong[0]
            detail.append(f"shape of {k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}")
        raise CheckpointError(f"weights in {source} do not fit the architecture: {'; '.join(detail)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def arch_from_clip_state_dict(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The inline architecture implied by an OpenAI-named CLIP state dict (heads are width / 64)."""
    try:
        vision_width, _, patch, _ = state["visual.conv1.weight"].shape
        grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        text_width = state["ln_final.weight"].shape[0]
        return {
            "embed_dim": int(state["text_projection"].shape[1]),
            "vision_cfg": {
                "image_size": int(patch * grid),
                "layers": _count_blocks(state, "visual.transformer.resblocks."),
                "width": int(vision_width),
                "patch_size": int(patch),
                "head_width": 64,
            },
            "text_cfg": {
                "context_length": int(state["positional_embedding"].shape[0]),
                "vocab_size": int(state["token_embedding.weight"].shape[0]),
                "width": int(text_width),
                "heads": max(1, int(text_width) // 64),
                "layers": _count_blocks(state, "transformer.resblocks."),
            },
        }
    except KeyError as exc:
        raise CheckpointError(f"not a CLIP ViT state dict: no {exc.args[0]!r}") from None


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})
