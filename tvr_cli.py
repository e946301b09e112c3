"""The ``tvr`` command line: one typer app; each package registers its own commands.

Package CLI modules import heavy libraries (torch, faiss, ...) inside their commands, so ``tvr --help``
stays fast. Every command runs inside one error handler (``_Commands.invoke``): a mistake the user can act
on (a bad file, value, setting or database) is one line on stderr and exit status 1; Ctrl+C is exit 130.
"""

from __future__ import annotations

import importlib
import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import typer
from typer.core import TyperGroup

# Modules with a ``register(app)`` function; a package that is not built yet is simply absent.
COMMAND_MODULES = ("model.cli", "model.train.cli", "indexer.cli", "indexer.collection_cli", "service.cli")

# Exceptions that describe a user's mistake in their own words ("module:Class"). They are looked up only
# among the modules already imported, since an exception of a module that was never imported cannot occur.
USER_ERRORS = (
    "indexer.errors:IndexerError",
    "model.backbone:CheckpointError",
    "model.calibration:CalibrationError",
    "model.config:ConfigError",
    "model.train.datasets:DatasetError",
)


def _loaded(path: str) -> type[BaseException] | None:
    module, name = path.split(":")
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def user_error_message(exc: BaseException) -> str | None:
    """One line for an error the user can act on; None for a bug, which keeps its traceback."""
    if any(cls is not None and isinstance(exc, cls) for cls in map(_loaded, USER_ERRORS)):
        return str(exc)
    from pydantic import ValidationError  # imported by then wherever settings are read
    from sqlalchemy.exc import OperationalError

    if isinstance(exc, ValidationError):
        return "settings: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    if isinstance(exc, OperationalError):
        return f"catalog database: {exc.orig}"
    return None


class _Commands(TyperGroup):
    """The ``tvr`` group: runs every command under the one error handler."""

    def invoke(self, ctx: Any) -> Any:  # typer's own copy of click.Context, which has no public name
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            typer.secho("Interrupted: what was committed stays; run the same command again to finish.", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:
            message = user_error_message(exc)
            if message is None:
                raise
            typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="tvr",
    cls=_Commands,
    help="Text-to-video search: train the encoder, index videos, serve search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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
    if not verbose:  # library chatter only with --verbose
        for name in ("faiss.loader", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)


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
