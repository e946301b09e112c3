"""``tvr train``, ``tvr eval`` and ``tvr confidence``. Heavy imports happen inside the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import torch


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
    from model import load_model
    from model.train.datasets import RetrievalSet, load_pairs
    from model.train.evaluate import evaluate as run_evaluation

    chosen = _device(device)
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


def _device(name: str) -> torch.device:
    import torch

    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else name.replace("auto", "cpu"))


def confidence_fit(
    checkpoint: Annotated[str, typer.Argument(help="A tvr checkpoint: file, folder or packaged name.")],
    data: Annotated[Path, typer.Option(help="Dataset folder (or a captions.jsonl / .csv file) not trained on.")],
    layout: Annotated[str, typer.Option(help="jsonl, csv, msrvtt, didemo, activitynet, lsmdc or msvd.")] = "jsonl",
    split: Annotated[str, typer.Option(help="Split to fit on: one the checkpoint was not trained on.")] = "val",
    output: Annotated[
        Path | None, typer.Option(help="Write a calibrated copy here (file or folder) instead of in place.")
    ] = None,
    sampling: Annotated[str, typer.Option(help="Frame sampling: uniform or fps1.")] = "uniform",
    device: Annotated[str, typer.Option(envvar="TVR_DEVICE", help="cpu, cuda or auto.")] = "auto",
    workers: Annotated[int, typer.Option(help="Decoding processes.")] = 2,
) -> None:
    """Fit the checkpoint's score calibration (cosine -> confidence of a text query) on a dataset split and
    store it in the checkpoint; its id, and indexes built with it, stay valid."""
    from model import load_model
    from model.checkpoint import write_calibration
    from model.train.datasets import RetrievalSet, load_pairs
    from model.train.evaluate import calibrate

    chosen = _device(device)
    retrieval = RetrievalSet.from_pairs(load_pairs(layout, data, split))
    model = load_model(checkpoint).to(chosen)
    fitted_on = f"{data} ({layout}, {split})"
    calibration, ece = calibrate(model, retrieval, chosen, fitted_on, workers, sampling)
    target = write_calibration(checkpoint, calibration, output)
    typer.echo(
        f"confidence = sigmoid({calibration.slope:.4f} x score {calibration.intercept:+.4f}), fitted on the top "
        f"{calibration.top_k} of {len(retrieval.captions)} captions ({calibration.matches} of {calibration.pairs} "
        f"pairs match); calibration error on them {ece:.4f}; written to {target}"
    )


def register(app: typer.Typer) -> None:
    app.command(
        "train",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    )(train)
    app.command("eval")(evaluate)
    confidence = typer.Typer(help="Score calibration of a checkpoint: what a result's confidence means.")
    confidence.command("fit")(confidence_fit)
    app.add_typer(confidence, name="confidence")
