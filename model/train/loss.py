"""Symmetric InfoNCE over the global batch (docs/METHOD.md section 5)."""

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
    video: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    labels: torch.Tensor | None = None,
    wants: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of the text->video and video->text cross-entropies of the scaled cosine matrix, on its diagonal.

    Inputs are this rank's raw embeddings; they are gathered so that every rank computes the same
    global-batch loss. With ``labels`` (see ``caption_labels``), rows whose captions are equal all count as
    matches: the probability of a caption is that of all clips bearing it, so a batch may hold duplicates.
    With ``labels`` as clip keys ``(N, K)`` and ``wants`` as caption keys ``(N, K)`` (``partial_captions``),
    caption i matches clip j when each column of ``wants[i]`` is ``ANY`` (-1) or equals ``labels[j]``'s.
    """
    video, text = _unit_rows(video), _unit_rows(text)
    logits = logit_scale * text @ video.T  # (N, N): caption i against clip j
    if labels is None:
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    keys = _key_rows(labels, logits.shape[0], logits.device)
    wanted = keys if wants is None else _key_rows(wants, logits.shape[0], logits.device)
    matched = logits.masked_fill(~_matches(wanted, keys), float("-inf"))
    t2v = (logits.logsumexp(1) - matched.logsumexp(1)).mean()
    v2t = (logits.logsumexp(0) - matched.logsumexp(0)).mean()
    return 0.5 * (t2v + v2t)


def query_loss(
    video: torch.Tensor, queries: torch.Tensor, logit_scale: torch.Tensor, keys: torch.Tensor, wants: torch.Tensor
) -> torch.Tensor:
    """Text-to-video cross-entropy of extra ``queries`` (M, E) against the batch's clips (N, E): query i's
    probability is that of every clip j whose key ``keys[j]`` has the attributes ``wants[i]`` names (-1:
    any). Gathered across ranks like ``symmetric_infonce``; there is no video-to-text direction."""
    logits = logit_scale * _unit_rows(queries) @ _unit_rows(video).T  # (M, N)
    keys = _key_rows(keys, logits.shape[1], logits.device)
    wanted = _key_rows(wants, logits.shape[0], logits.device)
    matched = logits.masked_fill(~_matches(wanted, keys), float("-inf"))
    return (logits.logsumexp(1) - matched.logsumexp(1)).mean()


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """All ranks' rows of ``x``, L2-normalised in float32 (gradient only into this rank's)."""
    return gather_with_local_grad(F.normalize(x.float(), dim=-1))


def _key_rows(keys: torch.Tensor, rows: int, device: torch.device) -> torch.Tensor:
    """All ranks' integer keys as ``(rows, K)`` (a 1-D label per row becomes ``K = 1``)."""
    return gather_with_local_grad(keys.to(device)).reshape(rows, -1)


def _matches(wanted: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Boolean (M, N): caption key ``wanted[i]`` is ``-1`` or equal to ``keys[j]`` in every column."""
    return ((wanted[:, None, :] == keys[None, :, :]) | (wanted[:, None, :] == -1)).all(-1)


def twin_separation(video: torch.Tensor, text: torch.Tensor, pairs: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Mean of max(0, margin - |a - b|) over the (row, twin row) ``pairs`` (P, 2) of unit embeddings, per tower,
    summed (margin 1.0 is cosine 0.5).

    InfoNCE alone has a saddle at twins that embed alike: a clip and its reversal cannot be told apart,
    so the captions that differ only in direction get no gradient to differ, and so neither do the clips.
    This term pushes each tower's twins apart on its own, with a gradient of constant size however close
    they are (a penalty on the cosine would vanish there too), until the contrastive loss takes over.
    Local to the process (no gathering).
    """
    if len(pairs) == 0:
        return video.sum() * 0.0
    total = video.new_zeros((), dtype=torch.float32)
    for x in (video, text):
        x = F.normalize(x.float(), dim=-1)
        gap = (x[pairs[:, 0]] - x[pairs[:, 1]]).pow(2).sum(-1).add(1e-12).sqrt()
        total = total + (margin - gap).clamp(min=0).mean()
    return total
