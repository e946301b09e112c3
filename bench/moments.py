"""Moment retrieval within a video (as Charades-STA): a checkpoint on long synthetic videos, through the service.

    python bench/moments.py [--checkpoint demo] [--videos 30] [--seed 5] [--minutes 2 4] [--data-dir DIR]
                            [--policy 10/5 --policy 10/2.5] [--details]

1. writes (or reuses) ``tvr synth --long`` videos (model/train/synth_long.py: one captioned 10-30 s event
   among distractor scenes) at the checkpoint's input size, under DIR/long-SEED;
2. ingests them with the indexer's own pipeline, once per clip policy (``--policy WINDOW/STRIDE`` in seconds;
   10/5 is the indexer's default), each into its own data directory DIR/index-WINDOW-STRIDE;
3. serves that directory with the service's app in this process (int8 queries on the CPU, as ``tvr serve``)
   and asks ``GET /videos/{id}/moments?q=QUERY`` for every video, its query being the event's short caption;
4. scores the top moment against the recorded event span by temporal IoU.

Prints a Markdown table, one row per policy: R@1 at IoU >= 0.5 and >= 0.7 (the top moment), mean IoU of the
top moment, R@5 at IoU >= 0.5 (any moment returned) and the grid's bound: the share of videos where some run
of segments (moment edges fall on window edges) reaches IoU >= 0.7 with the event. The answers (curves and
moments) are kept in DIR/answers-WINDOW-STRIDE.jsonl. Without --data-dir, DIR is a temporary folder.
Seed 1 is the demo checkpoint's training seed: the default, 5, is not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from served import wait_ready

from indexer.clips import ClipPolicy
from indexer.pipeline import IngestOptions, ingest
from indexer.sources import discover
from model.protocols import VideoTextEncoder
from model.train.synth import FPS
from model.train.synth_long import check_long_options, write_long_set
from service.app import create_app
from service.demo import corpus_size
from service.resources import load_encoder_from_settings
from service.settings import ServiceSettings

DEFAULT_POLICY = "10/5"


@dataclass(frozen=True)
class Outcome:
    """One video's answer against its event."""

    top_iou: float
    best_iou: float  # over every moment returned
    grid_iou: float  # the best any run of segments could reach


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Temporal intersection over union of two spans (seconds)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def grid_iou(windows: Sequence[tuple[float, float]], event: tuple[float, float]) -> float:
    """The best IoU with ``event`` of a span between two window edges: what moments cut there can reach."""
    edges = sorted({edge for window in windows for edge in window})
    return max((iou((a, b), event) for i, a in enumerate(edges) for b in edges[i + 1 :]), default=0.0)


def parse_policy(text: str) -> ClipPolicy:
    window, _, stride = text.partition("/")
    try:
        return ClipPolicy(window=float(window), stride=float(stride))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WINDOW/STRIDE in seconds, e.g. 10/5, got {text!r}: {exc}") from None


def write_manifest(moments: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A manifest of the long videos, titled by their names; returns it and the records."""
    records = [json.loads(line) for line in moments.read_text().splitlines()]
    manifest = moments.parent / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"path": r["video"], "title": r["video"]}) + "\n" for r in records))
    return manifest, records


def index_policy(
    manifest: Path, data_dir: Path, checkpoint: str, policy: ClipPolicy, encoder: VideoTextEncoder
) -> None:
    """Ingest the manifest's videos into ``data_dir`` with ``policy`` (unchanged files are skipped)."""
    settings = ServiceSettings(data_dir=data_dir, checkpoint=checkpoint, database_url="")
    started = time.monotonic()
    summary = ingest(settings, discover([], manifest), IngestOptions(policy=policy), encoder=encoder)
    if summary.failed:
        raise SystemExit(f"ingest into {data_dir} failed for {len(summary.failed)} videos: {summary.failed}")
    print(
        f"indexed {summary.indexed} videos ({summary.skipped} unchanged), {summary.clips} clips "
        f"in {time.monotonic() - started:.0f} s into {data_dir}",
        flush=True,
    )


def ask_moments(
    data_dir: Path, checkpoint: str, records: list[dict[str, Any]], encoder: VideoTextEncoder
) -> list[dict[str, Any]]:
    """``GET /videos/{id}/moments?q=QUERY`` of every record's video, from the service's own app (``encoder``:
    the one the service would load, ``load_encoder_from_settings``)."""
    settings = ServiceSettings(data_dir=data_dir, checkpoint=checkpoint, database_url="")
    answers = []
    with TestClient(create_app(settings, encoder_factory=lambda _: encoder)) as client:
        wait_ready(client)
        ids = video_ids(client)
        for record in records:
            answer = client.get(f"/videos/{ids[record['video']]}/moments", params={"q": record["query"]})
            if answer.status_code != 200:
                raise SystemExit(f"moments of {record['video']}: {answer.status_code} {answer.text}")
            answers.append(answer.json())
    return answers


def video_ids(client: TestClient) -> dict[str, int]:
    """Video id by title (the video's name in the set), from ``GET /videos``."""
    ids: dict[str, int] = {}
    while True:
        page = client.get("/videos", params={"offset": len(ids), "limit": 200}).json()
        ids.update({video["title"]: video["id"] for video in page["videos"]})
        if not page["videos"] or len(ids) >= page["total"]:
            return ids


def outcome(record: dict[str, Any], answer: dict[str, Any]) -> Outcome:
    event = (float(record["start"]), float(record["end"]))
    spans = [(m["start"], m["end"]) for m in answer["moments"]]
    windows = [(p["start"], p["end"]) for p in answer["curve"]]
    ious = [iou(span, event) for span in spans] or [0.0]
    return Outcome(ious[0], max(ious), grid_iou(windows, event))


def table_row(name: str, outcomes: list[Outcome]) -> str:
    top = np.array([o.top_iou for o in outcomes])
    best = np.array([o.best_iou for o in outcomes])
    grid = np.array([o.grid_iou for o in outcomes])
    return (
        f"| {name} | {len(outcomes)} | {(top >= 0.5).mean():.3f} | {(top >= 0.7).mean():.3f} | {top.mean():.3f} "
        f"| {(best >= 0.5).mean():.3f} | {(grid >= 0.7).mean():.3f} |"
    )


def detail_lines(records: list[dict[str, Any]], answers: list[dict[str, Any]], outcomes: list[Outcome]) -> list[str]:
    lines = [
        "| video | query | event (s) | top moment (s) | IoU | threshold |",
        "| --- | --- | --- | --- | ---: | ---: |",
    ]
    for record, answer, result in zip(records, answers, outcomes, strict=True):
        top = answer["moments"][0] if answer["moments"] else {"start": 0.0, "end": 0.0}
        lines.append(
            f"| {record['video']} | {record['query']} | {record['start']:.2f}-{record['end']:.2f} "
            f"| {top['start']:.2f}-{top['end']:.2f} | {result.top_iou:.2f} | {answer['threshold']:.3f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--checkpoint", default="demo", help="the encoder (a packaged name or a path)")
    parser.add_argument("--videos", type=int, default=30)
    parser.add_argument("--seed", type=int, default=5, help="set seed (1 is the demo checkpoint's training seed)")
    parser.add_argument("--minutes", type=float, nargs=2, default=[2.0, 4.0], metavar=("MIN", "MAX"))
    parser.add_argument("--data-dir", type=Path, default=None, help="keep the videos and indexes here")
    parser.add_argument(
        "--policy",
        type=parse_policy,
        action="append",
        help=f"WINDOW/STRIDE (repeatable; default {DEFAULT_POLICY} 10/2.5)",
    )
    parser.add_argument("--details", action="store_true", help="also print every video's event and top moment")
    args = parser.parse_args(argv)
    policies = args.policy or [parse_policy(DEFAULT_POLICY), parse_policy("10/2.5")]
    try:
        check_long_options(args.videos, 64, FPS, args.minutes[0] * 60, args.minutes[1] * 60)
    except ValueError as exc:
        parser.error(str(exc))

    root = args.data_dir or Path(tempfile.mkdtemp(prefix="tvr-bench-moments-"))
    try:
        settings = ServiceSettings(data_dir=root, checkpoint=args.checkpoint, database_url="")
        encoder = load_encoder_from_settings(settings)
        started = time.monotonic()
        moments = write_long_set(
            root / f"long-{args.seed}",
            videos=args.videos,
            seed=args.seed,
            size=corpus_size(encoder),
            min_seconds=args.minutes[0] * 60,
            max_seconds=args.minutes[1] * 60,
            progress=False,
        )
        manifest, records = write_manifest(moments)
        hours = sum(r["duration"] for r in records) / 3600
        print(
            f"{len(records)} long videos ({hours:.2f} h) in {time.monotonic() - started:.0f} s: {moments}", flush=True
        )

        rows, details = [], []
        for policy in policies:
            tag = f"{policy.window:g}-{policy.stride:g}"
            index_policy(manifest, root / f"index-{tag}", args.checkpoint, policy, encoder)
            answers = ask_moments(root / f"index-{tag}", args.checkpoint, records, encoder)
            (root / f"answers-{tag}.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
            outcomes = [outcome(r, a) for r, a in zip(records, answers, strict=True)]
            default = " (default)" if policy == ClipPolicy() else ""
            name = f"{policy.window:g} s every {policy.stride:g} s{default}"
            rows.append(table_row(name, outcomes))
            details += [f"\n{name}:\n", *detail_lines(records, answers, outcomes)]
    finally:
        if args.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)

    print(
        f"\ncheckpoint `{args.checkpoint}` ({encoder.checkpoint_id}), seed {args.seed}, "
        f"{args.minutes[0]:g}-{args.minutes[1]:g} min\n"
    )
    print(
        "| clip policy | videos | R@1 IoU>=0.5 | R@1 IoU>=0.7 | mean IoU (top) | R@5 IoU>=0.5 | grid bound IoU>=0.7 |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    if args.details:
        print("\n".join(details))


if __name__ == "__main__":
    main()
