"""The ``tvr`` command line: one typer app; each package registers its own commands.

Package CLI modules import heavy libraries (torch, faiss, ...) inside their commands, so ``tvr --help``
stays fast.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import PackageNotFoundError, version

import typer

app = typer.Typer(
    name="tvr",
    help="Text-to-video search: train the encoder, index videos, serve search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Modules with a ``register(app)`` function; a package that is not built yet is simply absent.
COMMAND_MODULES = ("model.cli", "model.train.cli", "indexer.cli", "service.cli")


def _version_callback(value: bool) -> None:
    if value:
        try:
            typer.echo(f"tvr {version('tvr')}")
        except PackageNotFoundError:
            typer.echo("tvr (not installed)")
        raise typer.Exit()


@app.callback()
def main(
    show_version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", envvar="TVR_VERBOSE", help="Debug logging."),
) -> None:
    """Text-to-video search: train the encoder, index videos, serve search."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:
        if exc.name != _name:
            raise
        continue
    _module.register(app)


if __name__ == "__main__":
    app()
