"""Where near-duplicates end: embedding cosines of copies, re-encodes and different videos, for ``dedupe``.

    python bench/dedupe.py [--videos 60] [--checkpoint demo] [--work /tmp/tvr-bench-dedupe]

Writes ``--videos`` synthetic clips (``tvr synth``), then for each a byte copy, a re-encode at low quality
(x264 CRF 38) and a re-encode at 3/4 size and another frame rate (what a re-upload through another site
does), ingests them all with the checkpoint, and prints the distribution of cosines between each original's
clip embedding and its copy's, its re-encodes', another video's with the same caption (a different video
that looks alike) and other videos'. A good ``dedupe_threshold`` lies above the last and below the first.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sqlite3
import time
from collections import defaultdict
from pathlib import Path

import av
import numpy as np


def reencode(source: Path, dest: Path, *, crf: int = 23, scale: float = 1.0, fps: int | None = None) -> None:
    """``source`` decoded and written again with libx264 at ``crf``, ``scale`` of its size and ``fps``."""
    from model.media import write_video

    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or 25
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    height, width = frames[0].shape[:2]
    size = (max(16, round(width * scale / 2) * 2), max(16, round(height * scale / 2) * 2))
    if size != (width, height):
        from PIL import Image

        frames = [np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR)) for f in frames]
    if fps is not None:  # resample by picking the nearest source frame
        count = max(1, round(len(frames) * fps / float(rate)))
        frames = [frames[min(len(frames) - 1, round(i * float(rate) / fps))] for i in range(count)]
    write_video(dest, np.stack(frames), fps=fps or rate, crf=crf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=60)
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tvr-bench-dedupe"))
    args = parser.parse_args()

    from indexer.pipeline import IngestOptions, ingest
    from indexer.settings import Settings
    from indexer.sources import discover
    from model.train.synth import write_synthetic_set

    shutil.rmtree(args.work, ignore_errors=True)
    captions = write_synthetic_set(args.work / "synth", videos=args.videos, seed=11, size=64, progress=False)
    rows = [json.loads(line) for line in captions.read_text().splitlines()]
    variants = args.work / "variants"
    variants.mkdir()
    caption_of: dict[str, str] = {}
    for row in rows:
        source = (args.work / "synth" / row["video"]).resolve()
        caption_of[str(source)] = row["caption"]
        shutil.copyfile(source, variants / f"{source.stem}.copy.mp4")
        reencode(source, variants / f"{source.stem}.crf38.mp4", crf=38)
        reencode(source, variants / f"{source.stem}.small.mp4", scale=0.75, fps=15)
    settings = Settings(data_dir=args.work / "data", checkpoint=args.checkpoint, database_url="")
    started = time.perf_counter()
    ingest(settings, discover([args.work / "synth", variants]), IngestOptions(progress=False))
    took = time.perf_counter() - started

    with sqlite3.connect(args.work / "data" / "catalog.sqlite3") as db:
        found = db.execute(
            "SELECT v.path, c.embedding FROM clips c JOIN videos v ON v.id = c.video_id ORDER BY v.path, c.position"
        ).fetchall()
    by_path: dict[str, np.ndarray] = {}
    for path, blob in found:
        by_path.setdefault(path, np.frombuffer(blob, np.float32))  # the first clip of each file
    cosines: defaultdict[str, list[float]] = defaultdict(list)
    originals = sorted(caption_of)
    for path in originals:
        stem = Path(path).stem
        vector = by_path[path]
        for kind in ("copy", "crf38", "small"):
            cosines[kind].append(float(vector @ by_path[str(variants / f"{stem}.{kind}.mp4")]))
        for other in originals:
            if other != path:
                same = caption_of[other] == caption_of[path]
                cosines["same caption" if same else "other"].append(float(vector @ by_path[other]))

    print(f"# dedupe cosines: {args.videos} synthetic videos, checkpoint {args.checkpoint}")
    print(f"{platform.node()}, {time.strftime('%Y-%m-%d')}; ingest of {len(by_path)} files took {took:.0f} s\n")
    thresholds = (0.9, 0.95, 0.97, 0.99)
    print("| pair | pairs | min | median | max | " + " | ".join(f">= {t}" for t in thresholds) + " |")
    print("| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in thresholds) + " |")
    for kind in ("copy", "crf38", "small", "same caption", "other"):
        values = np.asarray(cosines[kind])
        if len(values):
            shares = " | ".join(f"{np.mean(values >= t):.1%}" for t in thresholds)
            spread = f"{values.min():.4f} | {np.median(values):.4f} | {values.max():.4f}"
            print(f"| {kind} | {len(values)} | {spread} | {shares} |")


if __name__ == "__main__":
    main()
