"""Retrieval evaluation: embed every clip and caption of a set, rank, report the field's metrics."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from model.calibration import (
    ScoreCalibration,
    caption_matches,
    expected_calibration_error,
    fit_calibration,
    top_k_pairs,
)
from model.encoder import DualAttentionCLIP
from model.text_tower import tokenize

from .data import ClipFrames
from .datasets import RetrievalSet
from .metrics import retrieval_metrics


@torch.no_grad()
def embed_retrieval_set(
    model: DualAttentionCLIP,
    data: RetrievalSet,
    device: torch.device,
    batch_size: int = 16,
    workers: int = 0,
    sampling: str = "uniform",
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised (clips, E) video and (captions, E) text embeddings, on the CPU."""
    was_training = model.training
    model.eval()
    method = model.config.method
    frames = ClipFrames(data.clips, method.num_frames, model.preprocess, sampling)
    videos = []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for batch in DataLoader(frames, batch_size=batch_size, num_workers=workers):
        with autocast:
            videos.append(model.encode_video(batch.to(device))[0].float().cpu())
    texts = []
    for start in range(0, len(data.captions), 256):
        ids = tokenize(data.captions[start : start + 256], method.max_words).to(device)
        with autocast:
            texts.append(model.encode_text(ids).float().cpu())
    model.train(was_training)
    return F.normalize(torch.cat(videos), dim=-1), F.normalize(torch.cat(texts), dim=-1)


def evaluate(
    model: DualAttentionCLIP,
    data: RetrievalSet,
    device: torch.device,
    batch_size: int = 16,
    workers: int = 0,
    dual_softmax: bool = False,
    sampling: str = "uniform",
) -> dict:
    """``{"t2v": {...}, "v2t": {...}, "videos": n, "texts": m}`` (R@K in percent, MdR, MnR)."""
    video, text = embed_retrieval_set(model, data, device, batch_size, workers, sampling)
    sim = (text @ video.T).numpy()
    return retrieval_metrics(sim, data.caption_clip, dual_softmax_temperature=100.0 if dual_softmax else None)


def similarity_and_matches(
    video: torch.Tensor, text: torch.Tensor, data: RetrievalSet
) -> tuple[np.ndarray, np.ndarray]:
    """The (captions, clips) cosine matrix of embeddings from ``embed_retrieval_set``, and which clip each
    caption describes (every clip bearing the same caption)."""
    bearing: list[set[str]] = [set() for _ in data.clips]
    for caption, clip in zip(data.captions, data.caption_clip, strict=True):
        bearing[clip].add(caption)
    return (text @ video.T).numpy(), caption_matches(data.captions, bearing)


def calibrate(
    model: DualAttentionCLIP,
    data: RetrievalSet,
    device: torch.device,
    fitted_on: str,
    workers: int = 0,
    sampling: str = "uniform",
) -> tuple[ScoreCalibration, float]:
    """The model's score calibration fitted on ``data`` (a split it was not trained on; model/calibration.py),
    and its expected calibration error on the pairs it was fitted on."""
    video, text = embed_retrieval_set(model, data, device, workers=workers, sampling=sampling)
    similarity, matches = similarity_and_matches(video, text, data)
    calibration = fit_calibration(similarity, matches, fitted_on=fitted_on)
    scores, correct = top_k_pairs(similarity, matches, calibration.top_k)
    return calibration, expected_calibration_error(calibration.confidence(scores), correct)
