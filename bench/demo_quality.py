"""Retrieval quality of trained checkpoints on unseen synthetic clips, including direction and order.

    python bench/demo_quality.py --checkpoint demo=runs/demo/best --checkpoint baseline=runs/baseline/best

Two test sets, written once under --workdir with a seed the training sets did not use:
- ``fresh``: ``--videos`` clips drawn as ``tvr synth`` draws them;
- ``reversal``: ``--videos / 2`` clips and each one played backwards, captioned as what it then shows
  ("moves to the left, then moves up" backwards is "moves down, then moves to the right"). Every clip's
  reversal is in the set, so a model that cannot tell the order of frames gets about half of it wrong.
Prints t2v R@1 / R@5 / R@10 per checkpoint and set (a Markdown table).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from model import load_model
from model.train.datasets import RetrievalSet, load_pairs
from model.train.evaluate import evaluate
from model.train.synth import FPS, draw_scenes, encode_mp4, render_scene, write_synthetic_set
from model.train.twins import reversed_scene


def write_reversal_set(out: Path, pairs: int, seed: int, size: int = 64) -> Path:
    """``pairs`` clips and their backwards copies, with captions; returns captions.jsonl."""
    captions = out / "captions.jsonl"
    if captions.is_file():
        return captions
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for index, scene in enumerate(draw_scenes(pairs, seed)):
        frames = render_scene(scene, size, rng)
        for suffix, clip, shown in (("f", frames, scene), ("r", frames[::-1].copy(), reversed_scene(scene))):
            name = f"videos/pair_{index:04d}_{suffix}.mp4"
            encode_mp4(out / name, clip, FPS)
            records.append({"video": name, "caption": shown.caption, "duration": len(clip) / FPS})
    captions.write_text("".join(json.dumps(r) + "\n" for r in records))
    return captions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", required=True, help="NAME=SOURCE (repeatable)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tvr-demo-quality"))
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args(argv)

    fresh = args.workdir / "fresh"
    if not (fresh / "captions.jsonl").is_file():
        write_synthetic_set(fresh, videos=args.videos, seed=args.seed, progress=False)
    reversal = args.workdir / "reversal"
    write_reversal_set(reversal, args.videos // 2, seed=args.seed + 1000)
    sets = {name: RetrievalSet.from_pairs(load_pairs("jsonl", path, "test")) for name, path in
            (("fresh", fresh), ("reversal", reversal))}  # fmt: skip

    print("| checkpoint | test set | clips | t2v R@1 | R@5 | R@10 | MdR |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for spec in args.checkpoint:
        name, _, source = spec.partition("=")
        model = load_model(source)
        for set_name, data in sets.items():
            t2v = evaluate(model, data, torch.device("cpu"))["t2v"]
            print(
                f"| {name} | {set_name} | {len(data.clips)} | {t2v['R@1']:.1f} | {t2v['R@5']:.1f} "
                f"| {t2v['R@10']:.1f} | {t2v['MdR']:.0f} |"
            )


if __name__ == "__main__":
    main()
