"""``tvr`` commands of the model package: synthetic data (training and evaluation join here).

Heavy libraries (torch, av) are imported inside the commands, so ``tvr --help`` stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger(__name__)


def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write videos/ and captions.jsonl into.")],
    videos: Annotated[int, typer.Option("--videos", "-n", help="Number of clips, each with its own caption.")],
    seed: Annotated[int, typer.Option(help="Random seed: the same seed writes the same set.")] = 0,
    size: Annotated[int, typer.Option(help="Frame width and height in pixels (even, >= 32).")] = 64,
    renders: Annotated[
        int, typer.Option(min=1, help="Clips per caption, each drawn anew (training sets; the demo uses 1).")
    ] = 1,
) -> None:
    """Write a synthetic captioned video set: H.264 clips of a shape moving on a background."""
    from model.train.synth import draw_scenes, write_synthetic_set

    try:
        draw_scenes(videos, seed)  # checks the count before anything is written
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--videos") from None
    if size < 32 or size % 2:
        raise typer.BadParameter(f"must be an even number of pixels >= 32, got {size}", param_hint="--size")
    try:
        captions = write_synthetic_set(out, videos=videos, seed=seed, size=size, renders=renders)
    except OSError as exc:
        typer.echo(f"Error: cannot write the synthetic set to {out}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {videos * renders} videos; captions in {captions}")


def register(app: typer.Typer) -> None:
    """Add the model package's commands to the ``tvr`` app."""
    app.command("synth")(synth)
