"""Training: the loss goes down, --resume continues exactly, two DDP processes equal one, eval reports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import load_model
from model.train.synth import write_synthetic_set
from model.train.trainer import main as train_main


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic_set(out, videos=24, seed=7)
    return out


def _losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model", "tiny", "--data-root", str(data), "--output", str(out), "--batch-size", "8",
        "--workers", "0", "--log-every", "1", "--val-split", "none", "--lr", "1e-3", *extra,
    ]  # fmt: skip


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(synth_set, tmp_path):
    # All 24 pairs in one batch: every step sees the same batch, so the loss must fall.
    options = ("--batch-size", "24", "--max-steps", "6", "--warmup", "0", "--data-options", '{"val_fraction": 0}')
    state = train_main(_args(synth_set, tmp_path / "run", *options))
    assert state.step == 6
    assert state.losses[-1] < state.losses[0] - 0.05
    assert (tmp_path / "run" / "last" / "model.safetensors").is_file()
    trained = load_model(str(tmp_path / "run" / "last"))
    assert float(trained.visual_lora[0].b.abs().max()) > 0, "LoRA B moved away from zero"


@pytest.mark.parametrize(
    "twins",
    [
        [],
        ["--motion-twins", "--twin-separation", "1.0"],
        ["--motion-twins", "--partial-captions", "0.5"],
        ["--motion-twins", "--partial-queries", "0.5"],
    ],
    ids=["plain", "motion-twins", "partial-captions", "partial-queries"],
)
def test_resume_continues_with_the_same_losses(synth_set, tmp_path, twins):
    straight = train_main(_args(synth_set, tmp_path / "a", "--max-steps", "4", *twins))
    train_main(_args(synth_set, tmp_path / "b", "--max-steps", "4", "--stop-at-step", "2", *twins))
    resumed = train_main(["--resume", str(tmp_path / "b" / "last")])
    assert resumed.step == 4
    assert resumed.losses[:2] == straight.losses[:2]
    torch.testing.assert_close(
        torch.tensor(resumed.losses[2:]), torch.tensor(straight.losses[2:]), rtol=1e-5, atol=1e-5
    )
    a, b = load_model(str(tmp_path / "a" / "last")), load_model(str(tmp_path / "b" / "last"))
    for (name, x), (_, y) in zip(a.adapter_state_dict().items(), b.adapter_state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6, msg=name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ddp_processes_match_one_process_on_the_same_global_batch(synth_set, tmp_path):
    single = train_main(_args(synth_set, tmp_path / "one", "--max-steps", "2"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
        "--master-port", str(_free_port()), "-m", "model.train.trainer",
        *_args(synth_set, tmp_path / "two", "--max-steps", "2", "--device", "cpu"),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = _losses(tmp_path / "two")
    assert losses[1] == pytest.approx(single.losses[0], rel=1e-5)
    assert losses[2] == pytest.approx(single.losses[1], rel=1e-4)
    one, two = load_model(str(tmp_path / "one" / "last")), load_model(str(tmp_path / "two" / "last"))
    for (name, x), (_, y) in zip(one.adapter_state_dict().items(), two.adapter_state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-5, msg=name)


def test_validation_keeps_the_best_checkpoint_and_eval_reports_json(synth_set, tmp_path):
    from typer.testing import CliRunner

    from tvr_cli import app

    run = tmp_path / "run"
    train_main(
        _args(synth_set, run, "--max-steps", "2", "--val-split", "val", "--data-options", '{"val_fraction": 0.25}')
    )
    assert (run / "best" / "model.safetensors").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("val" in r for r in records)
    result = CliRunner().invoke(app, ["eval", "--checkpoint", str(run / "best"), "--data", str(synth_set), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert set(report) == {"t2v", "v2t", "videos", "texts"}
    assert set(report["t2v"]) == {"R@1", "R@5", "R@10", "MdR", "MnR"}
    assert report["videos"] == report["texts"] == 24


def test_from_scratch_models_start_order_aware_and_adapters_start_as_clip():
    """A zero temporal table is a saddle when training from scratch (a clip and its reversal embed alike);
    adapters on a pretrained backbone keep it zero, so they start as the backbone."""
    from model.train.trainer import TrainConfig, _build_model

    scratch = _build_model(TrainConfig(model="tiny", trainable=["all"], method={"temporal_embedding": True}))
    assert scratch.temporal.abs().mean() > 0.01
    frames = torch.randn(1, scratch.config.method.num_frames, 3, 64, 64)
    with torch.no_grad():
        forward, backward = scratch.encode_video(frames)[0], scratch.encode_video(frames.flip(1))[0]
    assert not torch.allclose(forward, backward, atol=1e-4)
    adapter = _build_model(TrainConfig(model="tiny", trainable=["lora"], method={"temporal_embedding": True}))
    assert torch.count_nonzero(adapter.temporal) == 0


@pytest.mark.slow
def test_training_and_validation_frames_use_the_models_preprocessing(synth_set, tmp_path, monkeypatch):
    from model import get_config
    from model.preprocess import FramePreprocess
    from model.train import evaluate, trainer
    from model.train.data import ClipFrames

    config = get_config("tiny").to_dict()
    config["preprocess"] = {"image_size": 64, "mean": [0.5] * 3, "std": [0.5] * 3, "resize_mode": "squash"}
    path = tmp_path / "half.json"
    path.write_text(json.dumps(config))
    seen = []

    class Recording(ClipFrames):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self.preprocess)

    monkeypatch.setattr(trainer, "ClipFrames", Recording)
    monkeypatch.setattr(evaluate, "ClipFrames", Recording)
    split = ("--val-split", "val", "--data-options", '{"val_fraction": 0.25}')
    train_main(_args(synth_set, tmp_path / "run", "--model", str(path), "--max-steps", "1", *split))
    half = FramePreprocess.from_dict(config["preprocess"])
    assert len(seen) >= 2 and set(seen) == {half}  # the training set, then the validation set
    assert load_model(str(tmp_path / "run" / "last")).preprocess == half
