"""Symmetric InfoNCE over the global batch (METHOD.md section 5)."""

from __future__ import annotations

import hashlib

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


def caption_labels(captions: list[str]) -> torch.Tensor:
    """int64 label per caption, equal for equal captions on every rank (a stable 63-bit hash)."""
    digests = (hashlib.blake2b(c.encode(), digest_size=8).digest() for c in captions)
    return torch.tensor([int.from_bytes(d, "little") >> 1 for d in digests], dtype=torch.int64)


def symmetric_infonce(
    video: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of the text->video and video->text cross-entropies of the scaled cosine matrix, on its diagonal.

    Inputs are this rank's raw embeddings; they are gathered so that every rank computes the same
    global-batch loss. With ``labels`` (see ``caption_labels``), rows whose captions are equal all count as
    matches: the probability of a caption is that of all clips bearing it, so a batch may hold duplicates.
    """
    video = gather_with_local_grad(F.normalize(video.float(), dim=-1))
    text = gather_with_local_grad(F.normalize(text.float(), dim=-1))
    logits = logit_scale * text @ video.T  # (N, N): caption i against clip j
    if labels is None:
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    labels = gather_with_local_grad(labels.to(logits.device))
    same = labels[:, None] == labels[None, :]
    matched = logits.masked_fill(~same, float("-inf"))
    t2v = (logits.logsumexp(1) - matched.logsumexp(1)).mean()
    v2t = (logits.logsumexp(0) - matched.logsumexp(0)).mean()
    return 0.5 * (t2v + v2t)
