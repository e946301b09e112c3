"""How well a checkpoint's confidence is calibrated on clips it never saw: expected calibration error.

    python bench/confidence.py --checkpoint demo

For each of ``--seeds`` (none a training seed): ``--videos`` fresh ``tvr synth`` clips (written once under
--workdir, shared with bench/demo_quality.py), every caption searched among them, and the confidence of each
of its top 10 results set against whether that clip matches the caption (bears it). Prints, per seed and
over all seeds, the expected calibration error (10 equal-width bins), and the reliability table of all.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from model import load_model
from model.calibration import ECE_BINS, TOP_K, expected_calibration_error, reliability, top_k_pairs
from model.train.datasets import RetrievalSet, load_pairs
from model.train.evaluate import embed_retrieval_set, similarity_and_matches
from model.train.synth import write_synthetic_set


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tvr-demo-quality"))
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 4])
    args = parser.parse_args(argv)

    model = load_model(args.checkpoint)
    calibration = model.calibration
    if calibration is None:
        raise SystemExit(f"{args.checkpoint} has no score calibration: run tvr confidence fit first")
    print(
        f"checkpoint {args.checkpoint}: confidence = sigmoid({calibration.slope:.3f} x score "
        f"{calibration.intercept:+.3f}), fitted on {calibration.fitted_on}\n"
    )
    print("| test set | captions | pairs (top 10) | matching | mean confidence | ECE |")
    print("| --- | --- | --- | --- | --- | --- |")
    confidence_all, correct_all = [], []
    for seed in args.seeds:
        folder = args.workdir / f"fresh-{seed}"
        if not (folder / "captions.jsonl").is_file():
            write_synthetic_set(folder, videos=args.videos, seed=seed, size=model.image_size, progress=False)
        data = RetrievalSet.from_pairs(load_pairs("jsonl", folder, "test"))
        video, text = embed_retrieval_set(model, data, torch.device("cpu"))
        scores, correct = top_k_pairs(*similarity_and_matches(video, text, data), TOP_K)
        confidence = calibration.confidence(scores)
        confidence_all.append(confidence)
        correct_all.append(correct)
        print(
            f"| fresh (seed {seed}) | {len(data.captions)} | {len(scores)} | {correct.mean():.3f} "
            f"| {confidence.mean():.3f} | {expected_calibration_error(confidence, correct):.4f} |"
        )
    confidence, correct = np.concatenate(confidence_all), np.concatenate(correct_all)
    print(
        f"| all | | {len(confidence)} | {correct.mean():.3f} | {confidence.mean():.3f} "
        f"| {expected_calibration_error(confidence, correct):.4f} |"
    )
    print("\n| confidence bin | pairs | mean confidence | share matching |\n| --- | --- | --- | --- |")
    for b, pairs, mean, share in reliability(confidence, correct):
        print(f"| {b / ECE_BINS:.1f}-{(b + 1) / ECE_BINS:.1f} | {pairs} | {mean:.3f} | {share:.3f} |")


if __name__ == "__main__":
    main()
