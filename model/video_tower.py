"""The dual-attention vision tower (docs/METHOD.md section 3), run on the blocks of an open_clip ViT.

Tokens of one video live in one tensor ``x`` of shape (B, G + U*M, D): the G global prompt tokens, then
U *units* of M tokens each. A unit starts as one frame (its CLS token and its patches); selection drops
patches inside every frame, and merging regroups units so that local attention spans several frames.

``run_video_tower`` lays the frames out in the order the merges will give them (``merge_layout``), so that
every merge regroups adjacent units and moves no data. Nothing but the order of keys in the prompts'
attention (a sum's order) depends on where a frame sits; every unit holds the frames, in the order, that
docs/METHOD.md section 3 names.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    # unit counts of the merges still to come that the units are laid out for (merge_layout): each regroups
    # adjacent units, in place
    laid_out_merges: tuple[int, ...] = ()

    @property
    def units(self) -> torch.Tensor:
        b, _, d = self.x.shape
        return self.x[:, self.num_global :].reshape(b, self.num_units, self.unit_len, d)  # (B, U, M, D)


@dataclass
class SelectionScores:
    """Head-averaged attention from the block before selection, per frame and patch: (B, T, N) each."""

    global_to_patch: torch.Tensor  # from global token 0 (softmax over all keys of the video)
    cls_to_patch: torch.Tensor  # from the frame's CLS token (softmax within the frame)


def merge_layout(num_frames: int, merge_units: Sequence[int], grouping: str = "strided") -> list[int]:
    """The frame order in which each of the merges to ``merge_units`` (in turn) joins adjacent units.

    It is the frames of the last merge's units, unit after unit, each in the order merging gives it; every
    earlier unit is then a run of adjacent frames in that order, and its parent unit a run of adjacent units.
    Strided to 6, 3, 1 units from 12 frames: 0, 6, 3, 9, 1, 7, 4, 10, 2, 8, 5, 11. Contiguous: 0, 1, ..., T-1.
    """
    units = [[t] for t in range(num_frames)]
    for s in merge_units:
        per = len(units) // s  # old units per new unit
        if grouping == "strided":  # new unit j: old units j, j+S, j+2S, ...
            units = [[t for i in range(per) for t in units[j + i * s]] for j in range(s)]
        else:  # new unit j: old units j*per ... (j+1)*per - 1
            units = [[t for unit in units[j * per : (j + 1) * per] for t in unit] for j in range(s)]
    return [t for unit in units for t in unit]


def embed_frames(
    visual: VisionTransformer,
    frames: torch.Tensor,
    prompts: torch.Tensor | None,
    temporal: torch.Tensor | None,
    order: Sequence[int] | None = None,
) -> VideoTokens:
    """Patch embedding, class token, positions and ln_pre per frame; then the prompts once per video.

    ``order`` lays the frames out in that order (frame ``order[i]`` becomes unit ``i``), in the same copy that
    puts the prompts in front.
    """
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
    pieces = [x.reshape(b, t * m, d)] if order is None or list(order) == list(range(t)) else [x[:, i] for i in order]
    g = 0
    if prompts is not None:
        g = prompts.shape[0]
        pieces.insert(0, prompts.to(x.dtype).expand(b, g, d))
    x = torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]  # (B, G + T*(1+N), D)
    return VideoTokens(x=x, num_global=g, num_units=t, unit_len=m, frames_per_unit=1)


def dual_attention_block(
    block: ResidualAttentionBlock,
    lora: QKVLoRA | None,
    tokens: VideoTokens,
    want_scores: bool = False,
) -> SelectionScores | None:
    """One block: local attention within units, global attention of the prompts over everything, MLP.

    Updates ``tokens.x`` and returns the selection scores when ``want_scores``: that block computes the
    probabilities selection reads explicitly (the prompts' rows and each frame's CLS row); all other attention
    runs in the fused kernel.
    """
    attn = block.attn
    x = tokens.x
    b, length, d = x.shape
    g, u, m = tokens.num_global, tokens.num_units, tokens.unit_len
    h = attn.num_heads
    hd = d // h

    qkv = F.linear(block.ln_1(x), qkv_weight(attn, lora), attn.in_proj_bias)  # (B, L, 3D)

    # Local: unit tokens attend within their unit, on 4-D (batch, head, token, width) views of qkv, which the
    # fused kernels take (5-D inputs fall back to torch's unfused path, which also computes bfloat16 in
    # float32). Videos and units share that batch dimension where qkv allows it without a copy, i.e. unless
    # prompts sit in front and B > 1; then a CPU runs one call per video on views (copying every unit's q/k/v
    # costs more there than the calls), a GPU one call after one copy (fewer kernels).
    units = qkv[:, g:].view(b, u, m, 3, h, hd)
    per_video = g and b > 1 and not x.is_cuda
    # B views of (U, M, 3, H, hd), or one (B*U, M, 3, H, hd), a view unless prompts and B > 1
    groups = list(units.unbind(0)) if per_video else [units.reshape(b * u, m, 3, h, hd)]
    heads = [[t.transpose(1, 2) for t in group.unbind(2)] for group in groups]  # q, k, v: (n, H, M, hd) each
    # (videos in the group, U*M, D): a view, as the kernel writes (n, M, H, hd)
    local = [F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, u * m, d) for q, k, v in heads]

    scores = None
    out = local[0]
    if g:
        # Global: the G prompt rows attend to all L tokens of their video; k and v are views of qkv.
        packed = qkv.view(b, length, 3, h, hd)
        qg = packed[:, :g, 0].transpose(1, 2)  # (B, H, G, hd)
        k, v = packed[:, :, 1].transpose(1, 2), packed[:, :, 2].transpose(1, 2)  # (B, H, L, hd)
        if want_scores:
            # Explicit, for prompt 0's probabilities (G rows: small).
            global_probs = torch.softmax((qg @ k.transpose(-1, -2)) * hd**-0.5, dim=-1)  # (B, H, G, L)
            glob = global_probs @ v  # (B, H, G, hd)
            # Each frame's CLS row of the local attention, the only local probabilities selection needs.
            rows = [torch.softmax((ql[:, :, :1] @ kl.transpose(-1, -2)) * hd**-0.5, dim=-1) for ql, kl, _ in heads]
            cls_probs = torch.cat(rows) if len(rows) > 1 else rows[0]  # (B*U, H, 1, M)
            # Selection runs while units are single frames: unit i is the i-th frame laid out, token 0 its CLS.
            scores = SelectionScores(
                global_to_patch=global_probs[:, :, 0, g:].mean(1).reshape(b, u, m)[:, :, 1:],  # (B, T, N)
                cls_to_patch=cls_probs.mean(1).view(b, u, m)[:, :, 1:],  # (B, T, N)
            )
        else:
            glob = F.scaled_dot_product_attention(qg, k, v)  # (B, H, G, hd)
        glob = glob.transpose(1, 2).reshape(b, g, d)
        if len(local) == 1:
            out = torch.cat([glob, out], dim=1)  # (B, L, D)
        else:  # per video: its prompts' rows, then its units', all in one copy
            out = torch.cat([t for j in range(b) for t in (glob[j], local[j][0])]).view(b, length, d)
    x = x + block.ls_1(attn.out_proj(out))
    tokens.x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return scores


def select_patches(tokens: VideoTokens, scores: SelectionScores, drop: int, alpha: float) -> None:
    """Keep, in every frame, its CLS token and the ``N - drop`` patches of highest score."""
    assert tokens.frames_per_unit == 1, "selection runs before any merge"
    score = alpha * scores.global_to_patch + (1.0 - alpha) * scores.cls_to_patch  # (B, T, N)
    b, t, n = score.shape
    g, m, d = tokens.num_global, tokens.unit_len, tokens.x.shape[-1]
    top = score.topk(n - drop, dim=-1).indices.sort(dim=-1).values  # (B, T, N-drop), patch numbers 0..N-1
    # Positions in x: unit t's CLS sits at g + t*M, its patch p at g + t*M + 1 + p; the prompts stay in front.
    cls = torch.arange(g, g + t * m, m, device=score.device).view(1, t, 1).expand(b, t, 1)
    keep = torch.cat([cls, top + (cls + 1)], dim=-1).flatten(1)  # (B, T*(1+N-drop))
    if g:
        keep = torch.cat([torch.arange(g, device=score.device).expand(b, g), keep], dim=1)
    tokens.x = tokens.x.gather(1, keep.unsqueeze(-1).expand(-1, -1, d))  # (B, G + T*(1+N-drop), D)
    tokens.unit_len = 1 + n - drop


def merge_units(tokens: VideoTokens, num_units: int, grouping: str = "strided") -> None:
    """Regroup U units into ``num_units``: strided puts units j, j+S, j+2S, ... into new unit j.

    Units laid out for this merge (``tokens.laid_out_merges``) are adjacent already: nothing moves.
    """
    u, s = tokens.num_units, num_units
    if s == u:
        return
    if tokens.laid_out_merges[:1] == (s,):
        tokens.laid_out_merges = tokens.laid_out_merges[1:]
        tokens.frames_per_unit *= u // s
        tokens.num_units, tokens.unit_len = s, (u // s) * tokens.unit_len
        return
    tokens.laid_out_merges = ()
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
    # Frames laid out for the merges (docstring at the top); per-frame outputs exist only without merges.
    plan = [merges[layer] for layer in sorted(merges)]
    tokens = embed_frames(visual, frames, prompts, temporal, merge_layout(frames.shape[1], plan, method.merge_grouping))
    tokens.laid_out_merges = tuple(plan)
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
