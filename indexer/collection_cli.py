"""``tvr collection list|rename|delete``: the catalog's named collections (``indexer.collections``).

Moving single videos is ``tvr ingest PATH --collection NAME``; renaming touches only catalog rows (no
re-encoding, no new index: searches see it once a server notices the rows' ``updated_at``); deleting removes
the videos as ``tvr delete`` does and republishes the index.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Annotated

import typer

from .cli import DatabaseUrlOption, DataDirOption, JsonOption, _sessions, _settings, republish

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from .collections import CollectionStats

collection_app = typer.Typer(help="Named collections of videos: list, rename, delete.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(collection_app, name="collection")


def collection_rows(sessions: sessionmaker[Session]) -> list[CollectionStats]:
    """Every collection of the catalog with its counts, by name."""
    from .collections import collection_stats
    from .db import read_snapshot

    with read_snapshot(sessions) as session:
        return collection_stats(session)


def print_collections(rows: list[CollectionStats]) -> None:
    """A table: name, indexed videos, their clips and hours, entries not indexed."""
    width = max([10, *(len(row.name) for row in rows)])
    typer.echo(f"{'collection':<{width}} {'videos':>8} {'clips':>10} {'hours':>9} {'not indexed':>11}")
    for row in rows:
        typer.echo(f"{row.name:<{width}} {row.videos:>8} {row.clips:>10} {row.hours:>9.2f} {row.not_indexed:>11}")


@collection_app.command("list")
def collection_list(
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Every collection: its indexed videos, their clips and hours, and its entries not indexed (failed)."""
    rows = collection_rows(_sessions(_settings(data_dir=data_dir, database_url=database_url)))
    if as_json:
        typer.echo(json.dumps({"collections": [dataclasses.asdict(row) for row in rows]}))
    elif rows:
        print_collections(rows)
    else:
        typer.echo("no collections: the catalog holds no videos")


@collection_app.command("rename")
def collection_rename(
    old: Annotated[str, typer.Argument(help="The collection to rename.", show_default=False)],
    new: Annotated[str, typer.Argument(help="Its new name (one no video uses yet).", show_default=False)],
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Move every video of OLD to NEW, a collection that does not exist yet (no re-encoding)."""
    from .collections import check_collection_name, rename_collection

    for name, where in ((old, "rename: OLD"), (new, "rename: NEW")):  # before the catalog is opened
        check_collection_name(name, where)
    settings = _settings(data_dir=data_dir, database_url=database_url)
    moved = rename_collection(_sessions(settings, writer=True), old, new)
    typer.echo(f"renamed collection {old} to {new}: {moved} videos")


@collection_app.command("delete")
def collection_delete(
    name: Annotated[str, typer.Argument(help="The collection to delete.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Delete every video of NAME (clips, embeddings, thumbnails) and republish the index; asks first."""
    from .collections import check_collection_name, delete_collection, no_such_collection

    check_collection_name(name, "delete")
    settings = _settings(data_dir=data_dir, database_url=database_url)
    found = {row.name: row for row in collection_rows(_sessions(settings))}.get(name)
    if found is None:
        raise no_such_collection("delete", name)
    if not yes:
        typer.confirm(
            f"Delete collection {name}: {found.videos} indexed videos ({found.clips} clips, {found.hours:.2f} h) "
            f"and {found.not_indexed} entries not indexed, from the catalog and the index?",
            abort=True,
        )
    deleted = delete_collection(_sessions(settings, writer=True), name)
    typer.echo(f"deleted collection {name}: {deleted} videos")
    republish(settings)
