"""Score calibration: fitted on held-out captions, stored in the checkpoint beside (not in) its weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from indexer_fixtures import tiny_checkpoint  # noqa: F401 (fixture)
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from model import load_encoder, load_model
from model.backbone import CheckpointError
from model.calibration import (
    CalibrationError,
    ScoreCalibration,
    caption_matches,
    expected_calibration_error,
    fit_calibration,
    top_k_pairs,
)
from model.checkpoint import resolve_checkpoint_path, write_calibration
from model.train.datasets import RetrievalSet, load_pairs
from model.train.synth import write_synthetic_set
from model.train.trainer import TrainConfig, _calibrate_outputs
from tvr_cli import app


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def test_platt_scaling_recovers_how_likely_a_score_is_to_match():
    rng = np.random.default_rng(0)
    similarity = rng.uniform(0.0, 1.0, (400, 60))
    matches = rng.random((400, 60)) < _sigmoid(12 * similarity - 9)  # the truth the fit should find
    calibration = fit_calibration(similarity, matches, fitted_on="drawn", k=60)
    assert calibration.slope == pytest.approx(12, rel=0.1) and calibration.intercept == pytest.approx(-9, rel=0.1)
    assert (calibration.pairs, calibration.top_k) == (400 * 60, 60)
    fresh = rng.uniform(0.0, 1.0, 20000)
    happened = rng.random(20000) < _sigmoid(12 * fresh - 9)
    assert expected_calibration_error(calibration.confidence(fresh), happened) < 0.02
    # the threshold form of min_confidence: scores at least score_at(c) are those of confidence >= c
    for wanted in (0.1, 0.5, 0.9):
        assert float(calibration.confidence(calibration.score_at(wanted))) == pytest.approx(wanted)


def test_the_fit_looks_at_each_captions_top_results_only():
    similarity = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.7]])
    matches = np.array([[True, False, False], [False, True, False]])
    scores, correct = top_k_pairs(similarity, matches, k=2)
    assert scores.tolist() == [0.9, 0.5, 0.8, 0.7] and correct.tolist() == [True, False, True, False]


def test_expected_calibration_error_by_hand():
    confidence = np.array([0.05, 0.15, 0.15, 0.95])
    correct = np.array([0, 1, 0, 1])
    # bins: [0, .1) holds 0.05 (accuracy 0), [.1, .2) two at 0.15 (accuracy .5), [.9, 1] one at 0.95 (accuracy 1)
    expected = 0.25 * 0.05 + 0.5 * abs(0.5 - 0.15) + 0.25 * 0.05
    assert expected_calibration_error(confidence, correct) == pytest.approx(expected)


def test_a_caption_matches_every_clip_bearing_it():
    matches = caption_matches(["a", "b"], [{"a"}, {"a", "b"}, {"c"}])
    assert matches.tolist() == [[True, True, False], [False, True, False]]


def test_data_without_both_kinds_of_pair_is_refused_with_a_reason():
    with pytest.raises(CalibrationError, match="no matching clips"):
        fit_calibration(np.ones((3, 3)), np.zeros((3, 3), bool), fitted_on="set")
    with pytest.raises(CalibrationError, match="do not score higher"):
        fit_calibration(np.array([[0.1, 0.9], [0.9, 0.1]]), np.eye(2, dtype=bool), fitted_on="set", k=2)


def test_storing_a_calibration_keeps_the_weights_and_the_checkpoint_id(tiny_checkpoint, tmp_path):  # noqa: F811
    calibration = ScoreCalibration(20.0, -4.0, 100, 10, 10, "somewhere (jsonl, val)")
    copy = write_calibration(tiny_checkpoint, calibration, tmp_path / "calibrated")
    assert copy == tmp_path / "calibrated" / "model.safetensors" and (tmp_path / "calibrated" / "config.json").is_file()
    original = resolve_checkpoint_path(tiny_checkpoint)
    tensors, stored = load_file(str(original)), load_file(str(copy))
    assert tensors.keys() == stored.keys() and all((tensors[k] == stored[k]).all() for k in tensors)
    plain, calibrated = load_encoder(tiny_checkpoint), load_encoder(copy.parent)
    assert plain.calibration is None and calibrated.calibration == calibration
    assert plain.checkpoint_id == calibrated.checkpoint_id  # indexes built with the checkpoint stay valid
    # a model saved again keeps it; fitting again replaces it, in place
    again = ScoreCalibration(30.0, -5.0, 100, 10, 10, "elsewhere")
    write_calibration(copy.parent, again)
    assert load_model(copy.parent).calibration == again


def test_an_unreadable_stored_calibration_names_the_file(tiny_checkpoint, tmp_path):  # noqa: F811
    shutil.copytree(tiny_checkpoint, tmp_path / "broken")
    path = tmp_path / "broken" / "model.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
    metadata["calibration"] = json.dumps({"method": "platt", "slope": -1.0})
    save_file(load_file(str(path)), str(path), metadata=metadata)
    with pytest.raises(CalibrationError, match=str(path)):
        load_model(path)
    with pytest.raises(CheckpointError, match="plain.safetensors.*only in a tvr checkpoint"):
        write_calibration(_reference_like(tmp_path), ScoreCalibration(1.0, 0.0, 1, 1, 1, "x"))


def _reference_like(tmp_path: Path) -> Path:
    path = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))  # safetensors, but no tvr metadata
    return path


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 synthetic clips the demo checkpoint was not trained on (another seed), as a jsonl set."""
    root = tmp_path_factory.mktemp("held-out")
    write_synthetic_set(root, videos=48, seed=77, size=64, progress=False)
    return root


def test_tvr_confidence_fit_calibrates_a_copy_of_the_demo_checkpoint(held_out, tmp_path):
    out = tmp_path / "demo-calibrated"
    result = CliRunner().invoke(
        app, ["confidence", "fit", "demo", "--data", str(held_out), "--split", "test", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "fitted on the top 10 of 48 captions" in result.output and str(out) in result.output
    calibration = load_encoder(out).calibration
    assert calibration is not None and calibration.slope > 0 and calibration.pairs == 480
    assert calibration.fitted_on == f"{held_out} (jsonl, test)"
    # a caption's own clip is its surest result: a demo match scores high, a stranger low
    assert float(calibration.confidence(0.9)) > 0.9 and float(calibration.confidence(0.0)) < 0.05
    assert load_encoder("demo").checkpoint_id == load_encoder(out).checkpoint_id


def test_tvr_confidence_fit_on_a_missing_set_says_so(tmp_path):
    result = CliRunner().invoke(app, ["confidence", "fit", "demo", "--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "dataset root does not exist" in result.output


def test_a_finished_run_calibrates_its_best_and_last_checkpoints(held_out, tmp_path):
    for name in ("best", "last"):
        shutil.copytree(resolve_checkpoint_path("demo").parent, tmp_path / "run" / name)
    val = RetrievalSet.from_pairs(load_pairs("jsonl", held_out, "test"))
    cfg = TrainConfig(data_root=str(held_out), val_split="test", workers=0)
    _calibrate_outputs(tmp_path / "run", val, torch.device("cpu"), cfg)
    best, last = (load_model(tmp_path / "run" / name).calibration for name in ("best", "last"))
    assert best is not None and best == last and best.fitted_on == f"{held_out} (jsonl, test)"
