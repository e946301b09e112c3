"""``tvr train`` and ``tvr eval``. Heavy imports happen inside the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def train(ctx: typer.Context) -> None:
    """Train the encoder: a recipe and/or flags (run `tvr train --help` for every option)."""
    from model.train.trainer import main

    main(list(ctx.args))


def evaluate(
    checkpoint: Annotated[str, typer.Option(envvar="TVR_CHECKPOINT", help="Any load_encoder source.")],
    data: Annotated[Path, typer.Option(help="Dataset folder (or a captions.jsonl / .csv file).")],
    layout: Annotated[str, typer.Option(help="jsonl, csv, msrvtt, didemo, activitynet, lsmdc or msvd.")] = "jsonl",
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    sampling: Annotated[str, typer.Option(help="Frame sampling: uniform or fps1.")] = "uniform",
    dual_softmax: Annotated[bool, typer.Option(help="Re-rank with dual softmax.")] = False,
    device: Annotated[str, typer.Option(envvar="TVR_DEVICE", help="cpu, cuda or auto.")] = "auto",
    workers: Annotated[int, typer.Option(help="Decoding processes.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line.")] = False,
) -> None:
    """Report text-to-video and video-to-text R@1, R@5, R@10, median and mean rank on a dataset split."""
    import torch

    from model import load_model
    from model.train.datasets import RetrievalSet, load_pairs
    from model.train.evaluate import evaluate as run_evaluation

    chosen = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else device.replace("auto", "cpu"))
    retrieval = RetrievalSet.from_pairs(load_pairs(layout, data, split))  # bad input: tvr_cli's error handler
    model = load_model(checkpoint).to(chosen)
    report = run_evaluation(model, retrieval, chosen, workers=workers, dual_softmax=dual_softmax, sampling=sampling)
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"{report['videos']} videos, {report['texts']} captions ({data}, {split})")
    for direction in ("t2v", "v2t"):
        figures = "  ".join(f"{name} {value:.1f}" for name, value in report[direction].items())
        typer.echo(f"{direction}: {figures}")


def register(app: typer.Typer) -> None:
    app.command(
        "train",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    )(train)
    app.command("eval")(evaluate)
