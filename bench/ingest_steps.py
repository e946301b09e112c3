"""What each of ingestion's decoding savings gains: the ingest run with all of them, and with each one off.

    python bench/ingest_steps.py --workdir /data/tvr-bench [--scale 1.0] [--groups "720p30, x264 default GOP"]
                                 [--baseline-commit e217122] [--repeats 2]

On ``bench/corpus.py``'s files (one group, or several), interleaved ``--repeats`` times, medians: the ingest
run of ``bench/ingest.py`` (a child process from start to exit, the ``demo`` checkpoint by default) with

- every saving (the default),
- non-reference frames decoded even where no sample shows them (``skip_unseen`` off),
- no seeking over stretches without samples (``seek_gaps`` off),
- slice threads only (``frame_threads`` off),
- whole frames converted to RGB and resized by torch (``scale_in_decoder`` off),
- long files decoded whole by one process (``segment_clips`` 0) instead of in segments of 48 clips,
- the decord reader,
- one decoding process (instead of one per core),
- and, with ``--baseline-commit``, the pipeline of that commit (a git worktree of this repository; the
  default, e217122, is session 3's: decord, 16-clip tasks that reopen the file, slice threads),

against PyAV decoding every frame of the same files (``thread_type="AUTO"``). Prints a Markdown table:
hours of video per hour, the ratio to decoding alone, and each variant's time over the all-savings run's.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

VARIANTS: dict[str, dict[str, Any]] = {
    "every saving": {},
    "unseen frames decoded": {"decode_steps": {"skip_unseen": False}},
    "no seeking over gaps": {"decode_steps": {"seek_gaps": False}},
    "slice threads only": {"decode_steps": {"frame_threads": False}},
    "whole frames resized by torch": {"scale_in_decoder": False},
    "long files whole (no segments)": {"segment_clips": 0},
    "decord reader": {"backend": "decord"},
    "one decoding process": {"workers": 1},
}


def baseline_worktree(commit: str, folder: Path) -> Path:
    """A checkout of ``commit`` of this repository at ``folder`` (made once)."""
    if not (folder / "indexer" / "pipeline.py").is_file():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), commit], check=True)
    return folder


def main(argv: list[str] | None = None) -> None:
    from corpus import ensure_corpus
    from ingest import decode_all, run_ingest

    from indexer.workers import default_workers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--groups", nargs="*", default=["720p30, x264 default GOP"])
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline-commit", default="e217122", help="'' for none")
    args = parser.parse_args(argv)
    args.device, args.threads, args.option = "cpu", 0, []

    load = os.getloadavg()[0]
    started_at = datetime.now(timezone.utc)
    folder, entries = ensure_corpus(args.workdir, args.scale, say=lambda text: print(text, flush=True))
    chosen = [e for e in entries if e["group"] in args.groups]
    files = [folder / e["file"] for e in chosen]
    seconds_of_video = sum(e["seconds"] for e in chosen)
    variants = dict(VARIANTS)
    baseline = None
    if args.baseline_commit:
        baseline = baseline_worktree(args.baseline_commit, args.workdir / f"baseline-{args.baseline_commit}")
        variants[f"session 3's pipeline ({args.baseline_commit})"] = {"root": str(baseline)}
    scratch = Path(tempfile.mkdtemp(prefix="tvr-bench-steps-", dir=args.workdir))
    decode: list[float] = []
    walls: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        decode.append(decode_all(files)[0])
        print(f"repeat {repeat + 1}: decode every frame {decode[-1]:.1f} s", flush=True)
        for name, change in variants.items():
            options = {k: v for k, v in change.items() if k not in ("root", "workers")}
            run_args = argparse.Namespace(**{**vars(args), "workers": change.get("workers", args.workers)})
            root = Path(change["root"]) if "root" in change else None
            result = run_ingest(files, run_args, args.checkpoint, scratch, options=options, root=root)
            walls[name].append(result["wall"])
            print(f"    {name}: {result['wall']:.1f} s ({result['clips']} clips)", flush=True)

    full = statistics.median(decode)
    best = statistics.median(walls["every saving"])
    print(
        f"\n{len(files)} files, {seconds_of_video / 60:.1f} min of video ({', '.join(args.groups)}), scale "
        f"{args.scale:g}; demo checkpoint ({args.checkpoint}), {args.workers} decoding processes; "
        f"{os.cpu_count()} cores, {platform.machine()}; {started_at:%Y-%m-%d %H:%M} UTC, load average "
        f"{load:.1f} at the start; decoding every frame: {full:.1f} s (median of {args.repeats})\n"
    )
    print("| ingest run | wall s (median) | hours of video per hour | x decoding every frame | x every saving |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, runs in walls.items():
        wall = statistics.median(runs)
        print(f"| {name} | {wall:.1f} | {seconds_of_video / wall:.1f} | {wall / full:.2f} | {wall / best:.2f} |")


if __name__ == "__main__":
    main()
