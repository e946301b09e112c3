"""``tvr demo``: a synthetic captioned corpus, indexed once with the demo checkpoint, then served.

The first run writes the videos (``model.train.synth``) and ingests them through the indexer's own
pipeline; later runs find the files unchanged, skip them, and serve within seconds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.settings import Settings

if TYPE_CHECKING:
    from model.protocols import VideoTextEncoder

log = logging.getLogger(__name__)

DEMO_VIDEOS = 150
DEMO_SEED = 0
DEMO_SIZE = 64  # pixels, as the demo checkpoint was trained
CORPUS_DIR = "demo-corpus"
MANIFEST = "manifest.jsonl"


def write_demo_corpus(data_dir: Path, videos: int = DEMO_VIDEOS) -> Path:
    """The synthetic videos and a manifest whose titles are their captions; returns the manifest."""
    from model.train.synth import write_synthetic_set

    folder = data_dir / CORPUS_DIR
    captions = write_synthetic_set(folder, videos=videos, seed=DEMO_SEED, size=DEMO_SIZE, progress=False)
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
    manifest = write_demo_corpus(data_dir, videos)
    summary = ingest(
        settings,
        discover([], manifest),
        IngestOptions(switch_checkpoint=True),  # a newer demo checkpoint re-encodes the corpus
        encoder=encoder,
        args={"demo": True, "videos": videos},
    )
    log.info(
        "demo corpus: %d indexed, %d unchanged, %d failed; %d clips in %.1f s",
        summary.indexed,
        summary.skipped,
        len(summary.failed),
        summary.clips,
        summary.seconds,
    )
