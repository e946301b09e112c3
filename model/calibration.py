"""Score calibration: a checkpoint's cosine scores read as the probability that a result matches its words.

A cosine of 0.3 is a sure match for one checkpoint and noise for another. Each checkpoint can carry a
calibration fitted on a validation split it was not trained on: Platt scaling, ``p = sigmoid(slope * cosine
+ intercept)``, fitted by maximum likelihood to the top ``top_k`` results of every validation caption, each
labelled by whether the clip matches the caption (it bears that caption). Fitting on the top results, not on
all pairs, fits the scores users are shown: most of all pairs are far-off non-matches that say nothing about
how sure a first result is.

The calibration lives in the checkpoint file's metadata (``calibration``), apart from the weights: fitting
one does not change the checkpoint id, so indexes built with the checkpoint stay valid. It describes text
queries like the validation captions; a search by example (an image, a clip) has no calibrated confidence.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

METADATA_KEY = "calibration"
TOP_K = 10  # results of each caption the fit (and the calibration error in bench/confidence.py) looks at
ECE_BINS = 10


class CalibrationError(ValueError):
    """Data a calibration cannot be fitted on, or a stored calibration that cannot be read."""


@dataclass(frozen=True)
class ScoreCalibration:
    """``confidence = sigmoid(slope * cosine + intercept)``, increasing in the cosine (slope > 0)."""

    slope: float
    intercept: float
    pairs: int  # (caption, clip) pairs it was fitted on
    matches: int  # how many of them match
    top_k: int  # results per caption it was fitted on
    fitted_on: str  # the data: a path and split

    def confidence(self, scores: np.ndarray | float) -> np.ndarray:
        """Confidence in [0, 1] of each cosine score."""
        z = self.slope * np.asarray(scores, dtype=np.float64) + self.intercept
        return np.asarray(np.exp(-np.logaddexp(0.0, -z)))  # sigmoid(z), without overflow

    def score_at(self, confidence: float) -> float:
        """The cosine whose confidence is ``confidence`` (0 < confidence < 1): results scoring at least this
        are those with at least this confidence."""
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence {confidence}: expected a number strictly between 0 and 1")
        return (math.log(confidence / (1.0 - confidence)) - self.intercept) / self.slope

    def to_json(self) -> str:
        return json.dumps({"method": "platt", **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "checkpoint") -> ScoreCalibration:
        try:
            data = json.loads(text)
            if data.pop("method") != "platt":
                raise ValueError("unknown method")
            calibration = cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise CalibrationError(f"{source}: its score calibration cannot be read ({exc})") from None
        if not calibration.slope > 0:
            raise CalibrationError(f"{source}: its score calibration does not increase with the score")
        return calibration


def top_k_pairs(similarity: np.ndarray, matches: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """The scores of every caption's (row's) ``k`` best clips (columns), and whether each clip matches."""
    k = min(k, similarity.shape[1])
    best = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    rows = np.arange(similarity.shape[0])[:, None]
    return similarity[rows, best].reshape(-1), matches[rows, best].reshape(-1)


def fit_calibration(similarity: np.ndarray, matches: np.ndarray, fitted_on: str, k: int = TOP_K) -> ScoreCalibration:
    """Platt scaling fitted to the top ``k`` clips of every caption.

    ``similarity`` is the (captions, clips) cosine matrix of a validation set and ``matches`` the boolean
    matrix of which clip each caption describes.
    """
    if similarity.shape != matches.shape or similarity.ndim != 2:
        raise CalibrationError(f"similarity {similarity.shape} and matches {matches.shape}: expected equal 2-D shapes")
    scores, correct = top_k_pairs(similarity, matches, k)
    found = int(correct.sum())
    if found == 0 or found == len(correct):
        raise CalibrationError(
            f"{fitted_on}: the top {k} results hold {'no' if found == 0 else 'only'} matching clips; a calibration "
            "needs both matches and non-matches (a validation set of more than one clip the model was not trained on)"
        )
    import torch  # only here: the service reads calibrations without torch

    x = torch.tensor(scores, dtype=torch.float64)
    y = torch.tensor(correct, dtype=torch.float64)
    params = torch.tensor([10.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], lr=1.0, max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(params[0] * x + params[1], y)
        loss.backward()
        return loss

    optimizer.step(closure)
    slope, intercept = (float(v) for v in params.detach())
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope <= 0:
        raise CalibrationError(
            f"{fitted_on}: matching clips do not score higher than the others (fitted slope {slope:.3g}); "
            "is this the checkpoint's own kind of data?"
        )
    return ScoreCalibration(slope, intercept, len(correct), found, k, fitted_on)


def reliability(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> list[tuple[int, int, float, float]]:
    """Per non-empty equal-width confidence bin: (bin, pairs, mean confidence, share correct)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    table = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            table.append((b, int(inside.sum()), float(confidence[inside].mean()), float(correct[inside].mean())))
    return table


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over ``bins`` equal-width confidence bins of (share of pairs) x |accuracy - mean confidence|."""
    pairs = len(np.asarray(confidence))
    return float(sum(n / pairs * abs(share - mean) for _, n, mean, share in reliability(confidence, correct, bins)))


def caption_matches(captions: list[str], clip_captions: list[set[str]]) -> np.ndarray:
    """(captions, clips) booleans: a caption matches every clip that bears the same caption."""
    return np.array([[caption in bearing for bearing in clip_captions] for caption in captions], dtype=bool)
