"""Planning a run: which discovered files need work, and whether this encoder may write into the catalog.

A file is skipped when the catalog holds it indexed with this checkpoint at the same size and mtime; it is
queued with its known hash when only the mtime changed (the worker hashes it and stops there if the bytes
are the same), and queued fully when it is new, changed, failed before, or of another checkpoint.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from . import store
from .catalog import VideoStatus
from .db import read_snapshot
from .errors import CheckpointMismatchError
from .queries import indexed_checkpoints, indexed_paths_of_other_checkpoints, videos_by_path
from .records import Description
from .sources import Source

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """The work of a run."""

    todo: list[tuple[Source, str | None]] = field(
        default_factory=list
    )  # (source, catalog hash if current); largest first
    unchanged: int = 0  # indexed with this checkpoint, same size and mtime
    # (video id, what to apply) of unchanged videos given a new title, metadata or collection: no re-encoding
    descriptions: list[tuple[int, Description]] = field(default_factory=list)


def with_checkpoint_switch(
    reads: sessionmaker[Session],
    index_dir: Path,
    sources: Sequence[Source],
    checkpoint_id: str,
    *,
    superseded: Collection[str] = (),
    switch: bool = False,
    name: str = "",
) -> list[Source]:
    """``sources``, plus every catalog video of another checkpoint when this run re-encodes them.

    Vectors of two checkpoints cannot share an index, so a run with another checkpoint is refused unless
    ``switch`` says to re-encode everything. Videos of a ``superseded`` checkpoint (the same weights under
    an id that did not yet include their preprocessing) are re-encoded without being asked. ``name`` is
    how the user named the checkpoint (for messages).
    """
    current = store.current_meta(index_dir)
    with read_snapshot(reads) as session:
        others = {c: n for c, n in indexed_checkpoints(session).items() if c != checkpoint_id}
        stale_index = current is not None and current.vector_count > 0 and current.checkpoint_id != checkpoint_id
        if not (others or stale_index):
            return list(sources)
        only_superseded = set(others) <= set(superseded) and (
            not stale_index or current is None or current.checkpoint_id in superseded
        )
        if not (switch or only_superseded):
            found = []
            if stale_index and current is not None:
                found.append(f"index v{current.version:06d} was built with checkpoint {current.checkpoint_id}")
            found += [f"{n} indexed videos were encoded with checkpoint {c}" for c, n in sorted(others.items())]
            named = f"{checkpoint_id} ({name})" if name else checkpoint_id
            raise CheckpointMismatchError(
                f"this run encodes with checkpoint {named}, but {' and '.join(found)}; vectors of two "
                "checkpoints cannot share an index. Use that --checkpoint, or re-encode everything with this "
                "one: `tvr ingest --switch-checkpoint PATH...`"
            )
        paths = indexed_paths_of_other_checkpoints(session, checkpoint_id)
    known = {str(s.path) for s in sources}
    extra = [Source(path=Path(p)) for p in paths if p not in known]
    if only_superseded and not switch:
        log.info("re-encoding %d videos indexed with this checkpoint's old preprocessing", len(paths))
    else:
        log.info("switching checkpoint: %d catalog videos of other checkpoints are re-encoded too", len(extra))
    return [*sources, *extra]


def plan(reads: sessionmaker[Session], sources: Sequence[Source], checkpoint_id: str) -> Plan:
    """What to do with each source, from its catalog row and the file's size and mtime."""
    with read_snapshot(reads) as session:
        rows = videos_by_path(session, [str(s.path) for s in sources])
    result = Plan()
    sizes: dict[str, int] = {}
    for source in sources:
        row = rows.get(str(source.path))
        current = row is not None and row.status == VideoStatus.indexed and row.checkpoint_id == checkpoint_id
        try:
            stat = os.stat(source.path)
        except OSError:
            stat = None
        if (
            row is not None
            and current
            and stat is not None
            and (row.size, row.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
        ):
            result.unchanged += 1
            new_title = source.title is not None and source.title != row.title
            new_meta = bool(source.metadata) and {**(row.meta or {}), **source.metadata} != (row.meta or {})
            moved = source.collection is not None and source.collection != row.collection
            if new_title or new_meta or moved:
                result.descriptions.append((row.id, Description(source.title, source.metadata, source.collection)))
            continue
        result.todo.append((source, row.content_hash if current and row is not None else None))
        sizes[str(source.path)] = stat.st_size if stat is not None else 0
    # largest first: a long file started last would decode alone at the end of the run
    result.todo.sort(key=lambda item: sizes[str(item[0].path)], reverse=True)
    return result
