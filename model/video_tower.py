"""The dual-attention vision tower (docs/METHOD.md section 3), run on the blocks of an open_clip ViT.

Tokens of one video live in one tensor ``x`` of shape (B, G + U*M, D): the G global prompt tokens, then
U *units* of M tokens each. A unit starts as one frame (its CLS token and its patches); selection drops
patches inside every frame, and merging regroups units so that local attention spans several frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn

from .config import MethodConfig
from .lora import QKVLoRA, lora_at, qkv_weight


@dataclass
class VideoTokens:
    """Tokens of a batch of videos and how they are grouped."""

    x: torch.Tensor  # (B, G + U*M, D)
    num_global: int  # G
    num_units: int  # U
    unit_len: int  # M: tokens per unit
    frames_per_unit: int  # frames whose tokens share a unit

    @property
    def units(self) -> torch.Tensor:
        b, _, d = self.x.shape
        return self.x[:, self.num_global :].reshape(b, self.num_units, self.unit_len, d)  # (B, U, M, D)


@dataclass
class SelectionScores:
    """Head-averaged attention from the block before selection, per frame and patch: (B, T, N) each."""

    global_to_patch: torch.Tensor  # from global token 0 (softmax over all keys of the video)
    cls_to_patch: torch.Tensor  # from the frame's CLS token (softmax within the frame)


def embed_frames(
    visual: VisionTransformer,
    frames: torch.Tensor,
    prompts: torch.Tensor | None,
    temporal: torch.Tensor | None,
) -> VideoTokens:
    """Patch embedding, class token, positions and ln_pre per frame; then the prompts once per video."""
    b, t = frames.shape[:2]
    x = visual.conv1(frames.flatten(0, 1))  # (B*T, D, gh, gw)
    x = x.flatten(2).transpose(1, 2)  # (B*T, N, D)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)  # (B*T, 1+N, D)
    x = visual.ln_pre(x)
    m, d = x.shape[1:]
    x = x.view(b, t, m, d)
    if temporal is not None:
        x = x + temporal.to(x.dtype)[:t, None, :]  # row t added to every token of frame t
    x = x.reshape(b, t * m, d)
    g = 0
    if prompts is not None:
        g = prompts.shape[0]
        x = torch.cat([prompts.to(x.dtype).expand(b, g, d), x], dim=1)  # (B, G + T*(1+N), D)
    return VideoTokens(x=x, num_global=g, num_units=t, unit_len=m, frames_per_unit=1)


def dual_attention_block(
    block: ResidualAttentionBlock,
    lora: QKVLoRA | None,
    tokens: VideoTokens,
    want_scores: bool = False,
) -> SelectionScores | None:
    """One block: local attention within units, global attention of the prompts over everything, MLP.

    Updates ``tokens.x`` and returns the selection scores when ``want_scores`` (they need the attention
    probabilities, so that block does not use the fused kernel).
    """
    attn = block.attn
    x = tokens.x
    b, length, d = x.shape
    g, u, m = tokens.num_global, tokens.num_units, tokens.unit_len
    h = attn.num_heads
    hd = d // h

    qkv = F.linear(block.ln_1(x), qkv_weight(attn, lora), attn.in_proj_bias)  # (B, L, 3D)
    qkv = qkv.view(b, length, 3, h, hd).permute(2, 0, 3, 1, 4)  # (3, B, H, L, hd)
    q, k, v = qkv.unbind(0)  # each (B, H, L, hd)

    # Local: unit tokens attend within their unit.
    def per_unit(t: torch.Tensor) -> torch.Tensor:
        return t[:, :, g:].reshape(b, h, u, m, hd).transpose(1, 2)  # (B, U, H, M, hd)

    ql, kl, vl = per_unit(q), per_unit(k), per_unit(v)
    scores = None
    glob: torch.Tensor | None  # the prompts' output; None without prompts
    if want_scores:
        local_probs = torch.softmax((ql @ kl.transpose(-1, -2)) * hd**-0.5, dim=-1)  # (B, U, H, M, M)
        local = local_probs @ vl
        global_probs = torch.softmax((q[:, :, :g] @ k.transpose(-1, -2)) * hd**-0.5, dim=-1)  # (B, H, G, L)
        glob = global_probs @ v  # (B, H, G, hd)
        # Selection runs while units are single frames: unit index = frame index, token 0 = CLS.
        scores = SelectionScores(
            global_to_patch=global_probs.mean(1)[:, 0, g:].reshape(b, u, m)[:, :, 1:],  # (B, T, N)
            cls_to_patch=local_probs.mean(2)[:, :, 0, 1:],  # (B, T, N)
        )
    else:
        local = F.scaled_dot_product_attention(ql, kl, vl)  # (B, U, H, M, hd)
        glob = F.scaled_dot_product_attention(q[:, :, :g], k, v) if g else None  # (B, H, G, hd)

    out = local.transpose(2, 3).reshape(b, u * m, d)  # (B, U*M, D)
    if glob is not None:
        out = torch.cat([glob.transpose(1, 2).reshape(b, g, d), out], dim=1)  # (B, L, D)
    x = x + block.ls_1(attn.out_proj(out))
    tokens.x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return scores


def select_patches(tokens: VideoTokens, scores: SelectionScores, drop: int, alpha: float) -> None:
    """Keep, in every frame, its CLS token and the ``N - drop`` patches of highest score."""
    assert tokens.frames_per_unit == 1, "selection runs before any merge"
    score = alpha * scores.global_to_patch + (1.0 - alpha) * scores.cls_to_patch  # (B, T, N)
    n = score.shape[-1]
    keep = score.topk(n - drop, dim=-1).indices.sort(dim=-1).values + 1  # (B, T, N-drop), 1.. skips CLS
    cls = keep.new_zeros(keep.shape[:-1] + (1,))
    keep = torch.cat([cls, keep], dim=-1)  # (B, T, 1+N-drop)
    units = tokens.units  # (B, T, 1+N, D)
    d = units.shape[-1]
    kept = units.gather(2, keep.unsqueeze(-1).expand(-1, -1, -1, d))  # (B, T, 1+N-drop, D)
    g = tokens.num_global
    tokens.x = torch.cat([tokens.x[:, :g], kept.flatten(1, 2)], dim=1)
    tokens.unit_len = kept.shape[2]


def merge_units(tokens: VideoTokens, num_units: int, grouping: str = "strided") -> None:
    """Regroup U units into ``num_units``: strided puts units j, j+S, j+2S, ... into new unit j."""
    u, s = tokens.num_units, num_units
    if s == u:
        return
    units = tokens.units  # (B, U, M, D)
    b, _, m, d = units.shape
    if grouping == "strided":
        units = units.view(b, u // s, s, m, d).transpose(1, 2)  # (B, S, U/S, M, D): [j, i] = unit i*S + j
    merged = units.reshape(b, s * (u // s) * m, d)  # contiguous grouping is the plain order
    g = tokens.num_global
    tokens.x = torch.cat([tokens.x[:, :g], merged], dim=1)
    tokens.frames_per_unit *= u // s
    tokens.num_units, tokens.unit_len = s, (u // s) * m


def frame_cls_embeddings(visual: VisionTransformer, tokens: VideoTokens) -> torch.Tensor:
    """``ln_post(CLS) @ proj`` of every frame: (B, T, E). Only while units are still single frames."""
    assert tokens.frames_per_unit == 1, "frame CLS tokens are read before any merge"
    return visual.ln_post(tokens.units[:, :, 0]) @ visual.proj


def run_video_tower(
    visual: VisionTransformer,
    loras: nn.ModuleList | None,
    frames: torch.Tensor,
    method: MethodConfig,
    prompts: torch.Tensor | None,
    temporal: torch.Tensor | None,
    return_frames: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Video embeddings (B, E) from normalised frames (B, T, 3, H, W), and per-frame ones on request.

    Zero-shot mode (no prompts) returns the mean of the per-frame CLIP embeddings.
    """
    merges = dict(zip(method.merge_layers, method.merge_units, strict=True)) if prompts is not None else {}
    if return_frames and merges:
        raise ValueError("per-frame embeddings exist only without segment merging (merge_layers empty) or zero-shot")
    tokens = embed_frames(visual, frames, prompts, temporal)
    sel_layer = method.sel_layer if prompts is not None else None
    scores = None
    for i, block in enumerate(visual.transformer.resblocks):
        if i == sel_layer:
            assert scores is not None, "the block before sel_layer returns them (sel_layer >= 1)"
            select_patches(tokens, scores, method.sel_drop, method.sel_alpha)
        if i in merges:
            merge_units(tokens, merges[i], method.merge_grouping)
        want_scores = sel_layer is not None and i == sel_layer - 1
        scores = dual_attention_block(block, lora_at(loras, i), tokens, want_scores=want_scores)
    if prompts is None:
        frame_embeddings = frame_cls_embeddings(visual, tokens)
        return frame_embeddings.mean(dim=1), frame_embeddings
    per_frame = frame_cls_embeddings(visual, tokens) if return_frames else None
    video = visual.ln_post(tokens.x[:, 0]) @ visual.proj  # global token 0
    return video, per_frame
