"""``tvr demo``: a synthetic captioned corpus, indexed once with the demo checkpoint, then served.

The first run writes the videos (``model.train.synth``) at the encoder's input size and ingests them through
the indexer's own pipeline; later runs find the files unchanged, skip them, and serve within seconds. A
checkpoint of another input size makes ``write_synthetic_set`` rewrite the files (its stamp records the
size), and the ingest re-encodes them; catalog rows of files no longer in the corpus are removed first.

``EXAMPLE_QUERIES``: the searches the demo page offers, in the captions' own words.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.settings import Settings

if TYPE_CHECKING:
    from model.protocols import VideoTextEncoder
    from model.train.synth import Scene

log = logging.getLogger(__name__)

DEMO_VIDEOS = 150
DEMO_SEED = 0
CORPUS_DIR = "demo-corpus"
MANIFEST = "manifest.jsonl"
MIN_CORPUS_SIZE = 32  # the synthetic writer's smallest frame side


@dataclass(frozen=True)
class ExampleQuery:
    """A search in the captions' vocabulary: a colour, a shape and one or two motions, in order."""

    colour: str
    shape: str
    motions: tuple[str, ...]

    @property
    def text(self) -> str:
        return f"a {self.colour} {self.shape} " + ", then ".join(self.motions)

    def right_colour(self, scene: Scene) -> bool:
        return scene.colour == self.colour

    def right_shape(self, scene: Scene) -> bool:
        return scene.shape == self.shape

    def right_motions(self, scene: Scene) -> bool:
        """The clip's motions begin with the query's: a one-motion query is answered by the clip's first."""
        return tuple(scene.events[: len(self.motions)]) == self.motions

    def matches(self, scene: Scene) -> bool:
        return self.right_colour(scene) and self.right_shape(scene) and self.right_motions(scene)


# Every colour, shape and direction of model.train.synth's vocabulary, each with at least one matching clip in
# the default corpus (DEMO_VIDEOS videos of DEMO_SEED; tests/test_service_demo.py checks both).
EXAMPLE_QUERIES: tuple[ExampleQuery, ...] = (
    ExampleQuery("red", "circle", ("moves to the right",)),
    ExampleQuery("white", "triangle", ("moves up",)),
    ExampleQuery("green", "square", ("moves down",)),
    ExampleQuery("yellow", "circle", ("moves to the left",)),
    ExampleQuery("blue", "square", ("moves to the right",)),
    ExampleQuery("red", "square", ("moves to the left",)),
    ExampleQuery("yellow", "triangle", ("moves down",)),
    ExampleQuery("yellow", "square", ("moves to the right", "moves up")),
    ExampleQuery("blue", "triangle", ("moves to the left", "moves up")),
)


def example_texts() -> list[str]:
    """The example queries as the page shows them."""
    return [query.text for query in EXAMPLE_QUERIES]


def corpus_size(encoder: VideoTextEncoder) -> int:
    """Frame side of the demo videos: the encoder's input size (even, and at least the writer's minimum),
    so that frames are not rescaled on their way in and a new input size rewrites the corpus."""
    return max(MIN_CORPUS_SIZE, encoder.image_size + encoder.image_size % 2)


def write_demo_corpus(data_dir: Path, size: int, videos: int = DEMO_VIDEOS) -> Path:
    """The synthetic videos (``size`` pixels square) and a manifest whose titles are their captions;
    returns the manifest."""
    from model.train.synth import write_synthetic_set

    folder = data_dir / CORPUS_DIR
    captions = write_synthetic_set(folder, videos=videos, seed=DEMO_SEED, size=size, progress=False)
    rows = []
    for line in captions.read_text().splitlines():
        record = json.loads(line)
        extra = {k: v for k, v in record.items() if k not in ("video", "caption", "title")}
        rows.append({"path": record["video"], "title": record["caption"], "metadata": extra})
    manifest = folder / MANIFEST
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if not manifest.exists() or manifest.read_text() != text:
        manifest.write_text(text)
    return manifest


def build_demo(settings: Settings, encoder: VideoTextEncoder, videos: int = DEMO_VIDEOS) -> None:
    """Write (or find) the corpus and ingest it; unchanged files are skipped, so a rerun takes seconds."""
    from indexer.pipeline import IngestOptions, ingest
    from indexer.sources import discover

    data_dir = settings.data_dir.expanduser()
    manifest = write_demo_corpus(data_dir, corpus_size(encoder), videos)
    discovery = discover([], manifest)
    removed = forget_other_videos(settings, {str(source.path) for source in discovery.sources})
    summary = ingest(
        settings,
        discovery,
        IngestOptions(switch_checkpoint=True),  # a newer demo checkpoint re-encodes the corpus
        encoder=encoder,
        args={"demo": True, "videos": videos},
    )
    log.info(
        "demo corpus: %d indexed, %d unchanged, %d failed, %d removed; %d clips in %.1f s",
        summary.indexed,
        summary.skipped,
        len(summary.failed),
        removed,
        summary.clips,
        summary.seconds,
    )


def forget_other_videos(settings: Settings, keep: set[str]) -> int:
    """Delete from the demo's catalog every video whose path is not in ``keep`` (files of a larger earlier
    corpus); the ingest that follows republishes the index without their clips. Returns how many."""
    from sqlalchemy import func, select

    from indexer.catalog import Video
    from indexer.db import make_sessionmaker, open_catalog, session_scope
    from indexer.records import delete_where

    engine = open_catalog(settings, writer=True)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            others = Video.path.not_in(keep)
            count = session.scalar(select(func.count()).select_from(Video).where(others)) or 0
            if count:
                delete_where(session, others)
    finally:
        engine.dispose()
    return int(count)
