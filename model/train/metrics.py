"""Retrieval metrics as the field reports them: R@1, R@5, R@10 (percent), median and mean rank (1-based).

A similarity matrix has one row per caption and one column per clip. Several captions may belong to one
clip; ``caption_clip[i]`` is the clip of caption ``i``.

- Text to video: a caption's rank is the rank of its own clip among all clips.
- Video to text: a clip's rank is the best rank of its own captions among all captions.

Ties: a rank counts the *wrong* candidates that score at least as high as the best right one
(``ties="pessimistic"``, the default), so a model that gives every candidate the same score ranks last,
not first. ``ties="optimistic"`` counts only strictly higher ones (what CLIP4Clip's code computes); with
real-valued similarities the two differ only where scores are exactly equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

Matrix = TypeVar("Matrix", np.ndarray, torch.Tensor)
RECALL_AT = (1, 5, 10)


def retrieval_metrics(
    sim: np.ndarray | torch.Tensor,
    caption_clip: Sequence[int],
    ties: str = "pessimistic",
    dual_softmax_temperature: float | None = None,
) -> dict:
    """``{"t2v": {...}, "v2t": {...}, "videos": n, "texts": m}`` for a (captions, clips) similarity matrix.

    Each direction holds ``R@1``, ``R@5``, ``R@10`` (percent), ``MdR`` and ``MnR``. With
    ``dual_softmax_temperature`` the ranks come from :func:`dual_softmax` of ``sim``, taken over captions for
    text to video and over clips for video to text.
    """
    scores = _as_numpy(sim)
    owner = _check(scores, caption_clip)
    if dual_softmax_temperature is None:
        t2v_scores = v2t_scores = scores
    else:
        t2v_scores = dual_softmax(scores, dual_softmax_temperature, axis=0)
        v2t_scores = dual_softmax(scores, dual_softmax_temperature, axis=1)
    return {
        "t2v": _summary(text_to_video_ranks(t2v_scores, owner, ties)),
        "v2t": _summary(video_to_text_ranks(v2t_scores, owner, ties)),
        "videos": int(scores.shape[1]),
        "texts": int(scores.shape[0]),
    }


def text_to_video_ranks(sim: np.ndarray, caption_clip: np.ndarray, ties: str = "pessimistic") -> np.ndarray:
    """The 1-based rank of each caption's own clip in its row, shape (captions,)."""
    own = sim[np.arange(sim.shape[0]), caption_clip][:, None]  # (m, 1)
    ranks = 1 + (sim > own).sum(axis=1)
    if _pessimistic(ties):
        ranks += (sim == own).sum(axis=1) - 1  # tied clips other than the caption's own
    return ranks


def video_to_text_ranks(sim: np.ndarray, caption_clip: np.ndarray, ties: str = "pessimistic") -> np.ndarray:
    """The 1-based rank of each clip's best own caption in its column, shape (clips,)."""
    num_clips = sim.shape[1]
    own = sim[np.arange(sim.shape[0]), caption_clip]  # (m,) each caption's score for its own clip
    best = np.full(num_clips, -np.inf, dtype=sim.dtype)
    np.maximum.at(best, caption_clip, own)  # (n,) the best own-caption score of each clip
    # No own caption scores above the best one, so every strictly higher score is a wrong caption's.
    ranks = 1 + (sim > best[None, :]).sum(axis=0)
    if _pessimistic(ties):
        own_at_best = np.bincount(caption_clip[own == best[caption_clip]], minlength=num_clips)
        ranks += (sim == best[None, :]).sum(axis=0) - own_at_best  # tied wrong captions
    return ranks


def dual_softmax(sim: Matrix, temperature: float = 100.0, axis: int = 0) -> Matrix:
    """Dual softmax (CAMoE): each score times the softmax of ``temperature * sim`` over ``axis``.

    With captions in rows, ``axis=0`` (over captions) re-weights for text-to-video ranking: a "hub" clip that
    scores high for every caption has its weight spread over all of them, so it no longer outranks each
    caption's own clip. Use ``axis=1`` for video-to-text ranking. ``sim`` holds cosine similarities (not
    multiplied by the logit scale); the result has the type, shape and dtype of ``sim``.
    """
    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 (over captions) or 1 (over clips), got {axis}")
    if isinstance(sim, torch.Tensor):
        return sim * torch.softmax(sim * temperature, dim=axis)
    scores = _float_array(sim)
    scaled = scores * temperature
    weights = np.exp(scaled - scaled.max(axis=axis, keepdims=True))
    weights /= weights.sum(axis=axis, keepdims=True)
    return (scores * weights).astype(scores.dtype, copy=False)


def _summary(ranks: np.ndarray) -> dict[str, float]:
    summary = {f"R@{k}": float(100.0 * np.mean(ranks <= k)) for k in RECALL_AT}
    summary["MdR"] = float(np.median(ranks))
    summary["MnR"] = float(np.mean(ranks))
    return summary


def _as_numpy(sim: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(sim, torch.Tensor):
        sim = sim.detach().cpu()
        return (sim if sim.dtype in (torch.float32, torch.float64) else sim.double()).numpy()
    return _float_array(sim)


def _float_array(sim: np.ndarray) -> np.ndarray:
    """``sim`` as float32 or float64 (other dtypes become float64, which holds them exactly)."""
    scores = np.asarray(sim)
    return scores if scores.dtype in (np.float32, np.float64) else scores.astype(np.float64)


def _check(sim: np.ndarray, caption_clip: Sequence[int]) -> np.ndarray:
    """Validate shapes and ownership; return caption_clip as an index array."""
    if sim.ndim != 2 or 0 in sim.shape:
        raise ValueError(f"similarity matrix must be 2-D (captions, clips) and non-empty, got shape {sim.shape}")
    if np.isnan(sim).any():
        raise ValueError("similarity matrix contains NaN; ranks would be meaningless")
    owner = np.asarray(caption_clip)
    if owner.shape != (sim.shape[0],) or (owner.size and not np.issubdtype(owner.dtype, np.integer)):
        raise ValueError(
            f"caption_clip must hold one integer clip index per caption ({sim.shape[0]}), "
            f"got shape {owner.shape} of {owner.dtype}"
        )
    if owner.min() < 0 or owner.max() >= sim.shape[1]:
        raise ValueError(f"caption_clip values must lie in [0, {sim.shape[1]}), got {owner.min()}..{owner.max()}")
    uncaptioned = np.flatnonzero(np.bincount(owner, minlength=sim.shape[1]) == 0)
    if uncaptioned.size:
        raise ValueError(f"clips {uncaptioned[:10].tolist()} have no caption; video-to-text ranks need one per clip")
    return owner.astype(np.intp)


def _pessimistic(ties: str) -> bool:
    if ties not in ("pessimistic", "optimistic"):
        raise ValueError(f"ties must be 'pessimistic' or 'optimistic', got {ties!r}")
    return ties == "pessimistic"
