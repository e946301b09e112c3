"""The demo page's example searches against the demo corpus, ranked as a user of ``tvr demo`` sees them.

    python bench/demo_examples.py [--data-dir /tmp/tvr-demo-examples] [--checkpoint demo] [--videos 150]

Builds (or reuses) the demo corpus in --data-dir with ``service.demo.build_demo``, serves it in this process
with the service's own app and the demo's settings (int8 queries on the CPU, as ``tvr demo``), takes the
example searches from the app's ``GET /demo/queries`` and asks ``GET /search?q=...&k=1`` for each. Prints a
Markdown table: the top clip's caption, whether its colour, its shape and its direction(s) are right (a
one-motion query is judged by the clip's first motion, a two-motion one by both, in order), and how many
searches got all three.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from served import wait_ready

from model.train.synth import Scene, draw_scenes
from service.app import create_app
from service.demo import DEMO_SEED, DEMO_VIDEOS, EXAMPLE_QUERIES, ExampleQuery, build_demo, example_texts
from service.resources import load_encoder_from_settings
from service.settings import ServiceSettings


def yes(right: bool) -> str:
    return "yes" if right else "**no**"


def top_hit(client: TestClient, text: str) -> dict[str, Any]:
    answer = client.get("/search", params={"q": text, "k": 1})
    if answer.status_code != 200 or not answer.json()["results"]:
        raise SystemExit(f"search {text!r}: {answer.status_code} {answer.text}")
    return answer.json()["results"][0]


def row(query: ExampleQuery, caption: str, scene: Scene) -> tuple[str, bool]:
    checks = (query.right_colour(scene), query.right_shape(scene), query.right_motions(scene))
    return f"| {query.text} | {caption} | {' | '.join(map(yes, checks))} |", all(checks)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/tvr-demo-examples"))
    parser.add_argument("--checkpoint", default="demo", help="the encoder (a packaged name or a path)")
    parser.add_argument("--videos", type=int, default=DEMO_VIDEOS)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the settings' own)")
    args = parser.parse_args(argv)

    values = {"data_dir": args.data_dir, "checkpoint": args.checkpoint, "database_url": "", "device": args.device}
    settings = ServiceSettings(**{k: v for k, v in values.items() if v is not None})
    encoder = load_encoder_from_settings(settings)
    build_demo(settings, encoder, args.videos)
    scenes = {scene.caption: scene for scene in draw_scenes(args.videos, DEMO_SEED)}
    by_text = {query.text: query for query in EXAMPLE_QUERIES}

    app = create_app(settings, encoder_factory=lambda _: encoder, demo_queries=example_texts())
    lines, right = [], 0
    with TestClient(app) as client:
        wait_ready(client)
        texts = client.get("/demo/queries").json()["queries"]
        for text in texts:
            caption = top_hit(client, text)["video"]["title"]
            line, correct = row(by_text[text], caption, scenes[caption])
            lines.append(line)
            right += correct

    print(f"checkpoint `{args.checkpoint}` ({encoder.checkpoint_id}), {args.videos} demo videos, {settings.device}\n")
    print("| query | top-1 clip | colour | shape | direction(s) |")
    print("|---|---|---|---|---|")
    print("\n".join(lines))
    print(f"\n{right} of {len(texts)} example searches have a clip of the right colour, shape and direction(s) first")


if __name__ == "__main__":
    main()
