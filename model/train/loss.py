"""Symmetric InfoNCE over the global batch (METHOD.md section 5)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_with_local_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' rows in rank order; only this rank's rows carry gradient (the others are constants)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def symmetric_infonce(video: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Mean of the text->video and video->text cross-entropies of the scaled cosine matrix, on its diagonal.

    Inputs are this rank's raw embeddings; they are gathered so that every rank computes the same
    global-batch loss.
    """
    video = gather_with_local_grad(F.normalize(video.float(), dim=-1))
    text = gather_with_local_grad(F.normalize(text.float(), dim=-1))
    logits = logit_scale * text @ video.T  # (N, N): caption i against clip j
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
