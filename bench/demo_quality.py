"""Retrieval quality of trained checkpoints on unseen synthetic clips, including direction and order.

    python bench/demo_quality.py --checkpoint demo=runs/demo/best --checkpoint baseline=runs/baseline/best

For each of ``--seeds`` (none of them a training seed), two test sets, written once under --workdir:
- ``fresh``: ``--videos`` clips drawn as ``tvr synth`` draws them;
- ``reversal``: ``--videos / 2`` clips and each one played backwards, captioned as what it then shows, all
  ``--videos`` captions distinct
  ("moves to the left, then moves up" backwards is "moves down, then moves to the right"). Every clip's
  reversal is in the set, so a model that cannot tell the order of frames gets about half of it wrong.
Prints t2v R@1 / R@5 / R@10 per checkpoint and set, and each checkpoint's mean R@1 per kind of set over the
seeds (a Markdown table).
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
from model.train.synth import FPS, Scene, draw_scenes, encode_mp4, render_scene, scene_space, write_synthetic_set
from model.train.twins import reversed_scene


def _reversible_scenes(pairs: int, seed: int) -> list[Scene]:
    """``pairs`` scenes in ``seed``'s order whose clips and reversals give ``2 * pairs`` distinct captions.

    A scene that moves one way and then back ("moves up, then moves down") shows the same caption backwards,
    and a one-motion scene's reversal can be another drawn scene: such captions would name two clips, and a
    caption's other clip would count as a miss however well the model reads order.
    """
    chosen, used = [], set()
    for scene in draw_scenes(len(scene_space()), seed):
        captions = {scene.caption, reversed_scene(scene).caption}
        if len(captions) == 2 and not captions & used:
            chosen.append(scene)
            used |= captions
            if len(chosen) == pairs:
                return chosen
    raise ValueError(f"the scene space has fewer than {pairs} reversible pairs")


def write_reversal_set(out: Path, pairs: int, seed: int, size: int = 64) -> Path:
    """``pairs`` clips and their backwards copies, with captions; returns captions.jsonl."""
    captions = out / "captions.jsonl"
    if captions.is_file():
        return captions
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for index, scene in enumerate(_reversible_scenes(pairs, seed)):
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
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 4], help="test-set seeds (reversal: +1000)")
    parser.add_argument("--size", type=int, default=64, help="frame size of the test clips (the models' input)")
    args = parser.parse_args(argv)

    sets = {}
    for seed in args.seeds:
        fresh = args.workdir / f"fresh-{seed}"
        if not (fresh / "captions.jsonl").is_file():
            write_synthetic_set(fresh, videos=args.videos, seed=seed, size=args.size, progress=False)
        reversal = args.workdir / f"reversal-v2-{seed + 1000}"
        write_reversal_set(reversal, args.videos // 2, seed=seed + 1000, size=args.size)
        for name, path in ((f"fresh (seed {seed})", fresh), (f"reversal (seed {seed + 1000})", reversal)):
            sets[name] = RetrievalSet.from_pairs(load_pairs("jsonl", path, "test"))

    print("| checkpoint | test set | clips | t2v R@1 | R@5 | R@10 | MdR |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    means = []
    for spec in args.checkpoint:
        name, _, source = spec.partition("=")
        model = load_model(source)
        by_kind: dict[str, list[float]] = {}
        for set_name, data in sets.items():
            t2v = evaluate(model, data, torch.device("cpu"))["t2v"]
            by_kind.setdefault(set_name.split()[0], []).append(t2v["R@1"])
            print(
                f"| {name} | {set_name} | {len(data.clips)} | {t2v['R@1']:.1f} | {t2v['R@5']:.1f} "
                f"| {t2v['R@10']:.1f} | {t2v['MdR']:.0f} |"
            )
        means += [f"| {name} | {kind}, mean of {len(r1)} | {np.mean(r1):.1f} |" for kind, r1 in by_kind.items()]
    print("\n| checkpoint | test sets | t2v R@1 |\n| --- | --- | --- |")
    print("\n".join(means))


if __name__ == "__main__":
    main()
