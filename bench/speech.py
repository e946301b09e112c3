"""Hybrid search where the subtitles say what the frames do not show (issue 16).

    python bench/speech.py [--data-dir /tmp/tvr-bench-speech] [--checkpoint demo] [--videos 240] [--seed 7]

Writes a synthetic set (``tvr synth``: a shape moving on a background) and, beside every clip, an SRT file
in which somebody speaks of one of ``len(TOPICS)`` topics for the whole clip: nothing in the frames shows
the topic, and nothing in the subtitles names a colour, shape or motion. Topics go round the clips in order,
so each is spoken of in ``videos / len(TOPICS)`` clips that look different. The set is ingested by the real
pipeline (SQLite catalog, FTS5) and served in this process by the service's own app, as ``tvr serve`` does.

Each clip is then looked for as a user who remembers both would: its short caption and its topic's words
("a red circle moves to the right, volcano lava"), in each mode (``GET /search?q=...&mode=...``). A search is
right at 1 when its top result is that clip. Visual search cannot tell clips that look alike apart by their
words, speech search cannot tell clips of one topic apart: hybrid search can. The same searches without the
topic's words on a copy of the set without subtitles check that hybrid ranks there exactly as visual.
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from served import wait_ready

from indexer.clips import ClipPolicy
from indexer.pipeline import IngestOptions, ingest
from indexer.settings import Settings
from indexer.sources import discover
from model.train.synth import Scene, draw_scenes, write_synthetic_set
from service.app import create_app
from service.resources import load_encoder_from_settings
from service.settings import ServiceSettings

MODES = ("visual", "speech", "hybrid")
# (what the query adds, what is said): no colour, shape, motion, size, speed or background words
TOPICS = (
    ("volcano lava", "Volcanoes pour out molten lava."),
    ("budget deficit", "The budget deficit grew again this quarter."),
    ("violin concerto", "She played the violin concerto from memory."),
    ("penguin colony", "A penguin colony huddles against the wind."),
    ("tax reform", "Parliament debated the tax reform all night."),
    ("chess opening", "His chess opening surprised everyone."),
    ("coffee harvest", "The coffee harvest starts in the highlands."),
    ("solar eclipse", "Crowds gathered to watch the solar eclipse."),
    ("marathon runner", "The marathon runner crossed the finish line."),
    ("bread recipe", "This bread recipe needs a long rise."),
    ("earthquake warning", "An earthquake warning reached every phone."),
    ("jazz trio", "A jazz trio played until midnight."),
    ("glacier melting", "Scientists measured the glacier melting."),
    ("election results", "Election results arrive after midnight."),
    ("honey bees", "Honey bees need wild flowers."),
    ("train strike", "Commuters faced a train strike on Monday."),
    ("museum opening", "The museum opening drew long queues."),
    ("vaccine trial", "The vaccine trial enrolled volunteers."),
    ("football transfer", "The football transfer broke a record."),
    ("rainforest canopy", "Monkeys live high in the rainforest canopy."),
    ("robot vacuum", "The robot vacuum got stuck under the sofa."),
    ("wedding speech", "The wedding speech made everyone laugh."),
    ("satellite launch", "The satellite launch was delayed by weather."),
    ("cheese market", "Farmers sell cheese at the Saturday market."),
)


def srt(duration: float, text: str) -> str:
    millis = round(duration * 1000)
    return f"1\n00:00:00,000 --> 00:00:{millis // 1000:02d},{millis % 1000:03d}\n{text}\n"


def short_caption(scene: Scene) -> str:
    return scene.describe(size=False, speed=False, background=False)


def ingested(root: Path, checkpoint: str, videos: int, seed: int, subtitles: bool) -> Path:
    """The data directory of the set under ``root`` (written, with or without subtitles, and ingested)."""
    captions = write_synthetic_set(root / "synth", videos=videos, seed=seed, size=64)
    rows = [json.loads(line) for line in captions.read_text().splitlines()]
    for number, record in enumerate(rows):
        path = (root / "synth" / record["video"]).with_suffix(".srt")
        if subtitles:
            path.write_text(srt(record["duration"], TOPICS[number % len(TOPICS)][1]))
        else:
            path.unlink(missing_ok=True)
    manifest = root / "synth" / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"path": r["video"], "title": r["caption"]}) + "\n" for r in rows))
    settings = Settings(data_dir=root / "data", checkpoint=checkpoint, database_url="")
    summary = ingest(settings, discover([], manifest), IngestOptions(policy=ClipPolicy()))
    if summary.failed:
        raise SystemExit(f"ingestion failed: {summary.failed[:3]}")
    return settings.data_dir


def serve(data_dir: Path, checkpoint: str) -> TestClient:
    settings = ServiceSettings(data_dir=data_dir, checkpoint=checkpoint, database_url="")
    encoder = load_encoder_from_settings(settings)
    return TestClient(create_app(settings, encoder_factory=lambda _: encoder))


def top_stems(client: TestClient, text: str, mode: str) -> list[str]:
    answer = client.get("/search", params={"q": text, "mode": mode, "k": 10})
    if answer.status_code != 200:
        raise SystemExit(f"search {text!r} ({mode}): {answer.status_code} {answer.text}")
    return [Path(hit["video"]["path"]).stem for hit in answer.json()["results"]]


def recall(found: list[list[str]], wanted: list[str], depth: int) -> float:
    return 100.0 * sum(want in top[:depth] for top, want in zip(found, wanted, strict=True)) / len(wanted)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/tvr-bench-speech"))
    parser.add_argument("--checkpoint", default="demo", help="the encoder (a packaged name or a path)")
    parser.add_argument("--videos", type=int, default=240)
    parser.add_argument("--seed", type=int, default=7, help="synthetic set seed (the demo model trained on 1)")
    args = parser.parse_args(argv)

    scenes = draw_scenes(args.videos, args.seed)
    stems = [f"synth_{number:05d}" for number in range(args.videos)]
    queries = [f"{short_caption(s)}, {TOPICS[n % len(TOPICS)][0]}" for n, s in enumerate(scenes)]

    with_text = ingested(args.data_dir / "with-subtitles", args.checkpoint, args.videos, args.seed, True)
    print("| mode | searches | R@1 | R@5 | R@10 |\n| --- | ---: | ---: | ---: | ---: |")
    with serve(with_text, args.checkpoint) as client:
        wait_ready(client)
        for mode in MODES:
            found = [top_stems(client, text, mode) for text in queries]
            cells = " | ".join(f"{recall(found, stems, depth):.1f}" for depth in (1, 5, 10))
            print(f"| {mode} | {len(queries)} | {cells} |")

    plain_root = args.data_dir / "without-subtitles"
    shutil.rmtree(plain_root / "data", ignore_errors=True)
    plain = ingested(plain_root, args.checkpoint, args.videos, args.seed, False)
    captions_only = [short_caption(s) for s in scenes]
    with serve(plain, args.checkpoint) as client:
        wait_ready(client)
        same = sum(top_stems(client, text, "hybrid") == top_stems(client, text, "visual") for text in captions_only)
        default: Any = client.get("/search", params={"q": captions_only[0]}).json()["mode"]
    print(
        f"\nWithout subtitles: hybrid's top 10 equals visual's for {same} of {len(captions_only)} searches; "
        f"the default mode there is {default}."
    )


if __name__ == "__main__":
    main()
