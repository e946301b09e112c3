"""An ingest run's tally: ``IngestSummary`` (what ``ingest`` returns), each video's outcome counted in it, and
the progress bar that shows it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tqdm import tqdm

from .store import IndexMeta
from .subtitles import SubtitleTally

Outcome = Literal["indexed", "skipped", "failed"]


@dataclass
class IngestSummary:
    run_id: int
    discovered: int
    ignored: int
    indexed: int = 0
    skipped: int = 0
    moved: int = 0  # unchanged videos moved to another collection (counted in ``skipped`` too)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    clips: int = 0
    video_seconds: float = 0.0  # duration of the videos indexed
    seconds: float = 0.0
    index: IndexMeta | None = None
    subtitles: SubtitleTally = field(default_factory=SubtitleTally)  # subtitle and transcript tracks
    # seconds per step: the decoders' (summed over workers: hash, open, demux, decode, convert, thumbnails)
    # and this process's (waiting for decoded clips, encoding, catalog commits)
    stage_seconds: dict[str, float] = field(default_factory=dict)


def progress_bar(summary: IngestSummary, progress: bool | None) -> tqdm[Any]:
    """A bar over the videos discovered, the skipped ones already done; ``progress`` None: only on a terminal."""
    return tqdm(
        total=summary.discovered,
        initial=summary.skipped,
        unit="video",
        disable=not progress if progress is not None else None,
        dynamic_ncols=True,
    )


def count_video(summary: IngestSummary, bar: tqdm[Any] | None, outcome: Outcome) -> None:
    """One video done: counted by its ``outcome`` (a failure is in ``summary.failed`` already), the bar moved
    on with the counts beside it."""
    if outcome == "indexed":
        summary.indexed += 1
    elif outcome == "skipped":
        summary.skipped += 1
    if bar is not None:
        bar.update(1)
        hours = summary.video_seconds / 3600
        bar.set_postfix(clips=summary.clips, hours=f"{hours:.2f}", failed=len(summary.failed), refresh=False)
