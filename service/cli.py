"""``tvr serve`` and ``tvr demo``. Heavy imports happen inside the commands so ``tvr --help`` stays fast."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from indexer.cli import DatabaseUrlOption, DataDirOption

if TYPE_CHECKING:
    from .settings import ServiceSettings

log = logging.getLogger(__name__)

HostOption = Annotated[str, typer.Option(envvar="TVR_HOST", help="Interface to listen on (0.0.0.0: every one).")]
CheckpointOption = Annotated[
    str | None,
    typer.Option(
        envvar="TVR_CHECKPOINT", help="Text encoder: the checkpoint that built the index.", show_default=False
    ),
]
DeviceOption = Annotated[str | None, typer.Option(envvar="TVR_DEVICE", help="cpu or cuda.", show_default=False)]
LogFormatOption = Annotated[str, typer.Option(envvar="TVR_LOG_FORMAT", help="json or text (key=value).")]


def _quiet_openmp() -> None:
    """Idle OpenMP threads spin only briefly before they sleep: torch and FAISS share the cores with each
    other and with concurrent requests, and threads that spin for long slow a busy machine down tenfold,
    while threads that sleep at once (OMP_WAIT_POLICY=PASSIVE) wake too late between the many small
    operations of a query: int8 query encoding took twice as long. Must run before torch or FAISS load
    (set OMP_WAIT_POLICY or GOMP_SPINCOUNT yourself to override)."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "200000")  # ~0.1 ms of spinning (libgomp, torch's OpenMP)


def _logged_settings(**values: object) -> ServiceSettings:
    """Settings from ``values`` (a bad one is a user error), with the logs configured as they say."""
    from . import logs

    settings = _settings(**values)
    logs.configure(settings.log_format, logging.getLogger().getEffectiveLevel())
    return settings


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("demo")(demo)


def _settings(**overrides: Any) -> ServiceSettings:
    from .settings import ServiceSettings

    return ServiceSettings(**{k: v for k, v in overrides.items() if v is not None})


def serve(
    host: HostOption = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="TVR_PORT", min=0, max=65535, help="TCP port (0: any free one).")] = 8000,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
    checkpoint: CheckpointOption = None,
    device: DeviceOption = None,
    log_format: LogFormatOption = "json",
) -> None:
    """Serve the search API and web page over a data directory (uvicorn)."""
    _quiet_openmp()
    settings = _logged_settings(
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        checkpoint=checkpoint,
        device=device,
        log_format=log_format,
    )
    from .server import serve as run_server  # torch, FAISS: after the logs are set up

    status = run_server(settings, on_listening=lambda url: typer.echo(f"tvr: serving on {url}", err=True))
    if status:
        raise typer.Exit(status)


def _check_demo_videos(videos: int) -> int:
    """``--videos`` within the synthetic scenes there are (each video is a distinct scene)."""
    from model.train.synth import scene_space

    scenes = len(scene_space())
    if not 1 <= videos <= scenes:
        raise typer.BadParameter(f"{videos} is not between 1 and {scenes} (the number of distinct synthetic scenes)")
    return videos


def demo(
    port: Annotated[int, typer.Option(envvar="TVR_PORT", min=0, max=65535, help="TCP port.")] = 8000,
    host: HostOption = "127.0.0.1",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar="TVR_DATA_DIR",
            help="Where the demo lives (default: tvr/demo in the user cache).",
            show_default=False,
        ),
    ] = None,
    checkpoint: Annotated[str, typer.Option(envvar="TVR_CHECKPOINT", help="Encoder of the demo.")] = "demo",
    videos: Annotated[
        int,
        typer.Option(callback=_check_demo_videos, help="Videos in the demo corpus (each a distinct synthetic scene)."),
    ] = 150,
    device: DeviceOption = None,
    log_format: Annotated[str, typer.Option(envvar="TVR_LOG_FORMAT", help="json or text (key=value).")] = "text",
) -> None:
    """Build a small synthetic corpus, index it with the demo checkpoint, and serve it on http://127.0.0.1:8000."""
    _quiet_openmp()
    from indexer.settings import default_data_dir

    settings = _logged_settings(
        host=host,
        port=port,
        data_dir=data_dir or default_data_dir() / "demo",
        checkpoint=checkpoint,
        device=device,
        database_url="",  # the demo keeps its own SQLite catalog, whatever TVR_DATABASE_URL says
        log_format=log_format,
    )
    from .demo import build_demo, example_texts  # torch, FAISS: after the logs are set up
    from .resources import load_encoder_from_settings
    from .server import serve as run_server

    typer.echo(f"tvr demo: data in {settings.data_dir}; loading the encoder ({settings.checkpoint})", err=True)
    encoder = load_encoder_from_settings(settings)
    build_demo(settings, encoder, videos)
    examples = example_texts()
    status = run_server(
        settings,
        encoder_factory=lambda _: encoder,
        demo_queries=examples,
        on_listening=lambda url: typer.echo(f"tvr demo: open {url} and search, e.g. '{examples[0]}'"),
    )
    if status:
        raise typer.Exit(status)
