"""``tvr`` commands of the model package: synthetic data (training and evaluation join here).

Heavy libraries (torch, av) are imported inside the commands, so ``tvr --help`` stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger(__name__)

# `tvr synth --long --minutes`: the range a long video's length is drawn from (synth_long.LONG_SECONDS)
LONG_MINUTES = (2.0, 10.0)


def synth(
    out: Annotated[
        Path, typer.Argument(help="Folder to write videos/ and captions.jsonl (with --long: moments.jsonl) into.")
    ],
    videos: Annotated[
        int,
        typer.Option(
            "--videos", "-n", help="Number of clips, each with its own caption (with --long: of long videos)."
        ),
    ],
    seed: Annotated[int, typer.Option(help="Random seed: the same seed writes the same set.")] = 0,
    size: Annotated[int, typer.Option(help="Frame width and height in pixels (even, >= 32).")] = 64,
    renders: Annotated[
        int, typer.Option(min=1, help="Clips per caption, each drawn anew (training sets; the demo uses 1).")
    ] = 1,
    long: Annotated[
        bool,
        typer.Option(
            "--long",
            help="Long videos for moment retrieval: a captioned event of 10-30 s among distractor scenes, "
            "its span and short caption (the query) in moments.jsonl.",
        ),
    ] = False,
    minutes: Annotated[
        tuple[float, float] | None,
        typer.Option(
            metavar="MIN MAX",
            help=f"With --long: each video lasts MIN to MAX minutes, both within {LONG_MINUTES[0]:g} to "
            f"{LONG_MINUTES[1]:g} (default: {LONG_MINUTES[0]:g} {LONG_MINUTES[1]:g})",
        ),
    ] = None,
) -> None:
    """Write a synthetic captioned video set: H.264 clips of a shape moving on a background."""
    from model.train.synth import draw_scenes, write_synthetic_set

    if size < 32 or size % 2:
        raise typer.BadParameter(f"must be an even number of pixels >= 32, got {size}", param_hint="--size")
    if long:
        _synth_long(out, videos, seed, size, renders, minutes or LONG_MINUTES)
        return
    if minutes is not None:
        raise typer.BadParameter("applies to long videos only: add --long", param_hint="--minutes")
    try:
        draw_scenes(videos, seed)  # checks the count before anything is written
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--videos") from None
    try:
        captions = write_synthetic_set(out, videos=videos, seed=seed, size=size, renders=renders)
    except OSError as exc:
        typer.echo(f"Error: cannot write the synthetic set to {out}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {videos * renders} videos; captions in {captions}")


def _synth_long(out: Path, videos: int, seed: int, size: int, renders: int, minutes: tuple[float, float]) -> None:
    """``tvr synth --long``: check the options, then write the long videos and moments.jsonl."""
    from model.train.synth_long import write_long_set

    if videos < 1:
        raise typer.BadParameter(f"must be >= 1, got {videos}", param_hint="--videos")
    if renders != 1:
        raise typer.BadParameter(f"must be 1 with --long (one render per video), got {renders}", param_hint="--renders")
    low, high = minutes
    if not LONG_MINUTES[0] <= low <= high <= LONG_MINUTES[1]:
        raise typer.BadParameter(
            f"expected MIN <= MAX, both within {LONG_MINUTES[0]:g} to {LONG_MINUTES[1]:g} minutes, "
            f"got {low:g} {high:g}",
            param_hint="--minutes",
        )
    try:
        moments = write_long_set(out, videos=videos, seed=seed, size=size, min_seconds=low * 60, max_seconds=high * 60)
    except OSError as exc:
        typer.echo(f"Error: cannot write the long synthetic set to {out}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {videos} long videos; events and queries in {moments}")


def register(app: typer.Typer) -> None:
    """Add the model package's commands to the ``tvr`` app."""
    app.command("synth")(synth)
