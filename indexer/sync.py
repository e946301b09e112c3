"""Keeping the published FAISS index in agreement with the catalog: update, rebuild, verify, stats.

The catalog's embeddings of indexed videos are the truth. ``sync_index`` publishes a new version only when
the index differs from them: by adding and removing ids on a copy of the current version when its type,
factory and checkpoint still fit, else by a full rebuild (training IVF on a sample first).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from . import store, vector_index
from .builder import build_index
from .catalog import Clip, IndexVersion, Video, VideoStatus
from .db import read_snapshot, session_scope
from .errors import CheckpointMismatchError, IndexerError
from .queries import catalog_clip_ids, embedding_dim, fetch_embeddings, indexed_checkpoints
from .store import IndexMeta

log = logging.getLogger(__name__)


def single_checkpoint(session: Session) -> str | None:
    """The checkpoint of every indexed video, or None for an empty catalog; refuses a mixed catalog."""
    counts = indexed_checkpoints(session)
    if len(counts) > 1:
        detail = ", ".join(f"{c}: {n} videos" for c, n in sorted(counts.items()))
        raise CheckpointMismatchError(
            f"the catalog holds embeddings of {len(counts)} checkpoints ({detail}); one index cannot mix them: "
            "re-ingest with one checkpoint (`tvr ingest --switch-checkpoint ...`)"
        )
    return next(iter(counts), None)


def sync_index(
    sessions: sessionmaker[Session],
    index_dir: Path,
    *,
    factory: str | None = None,
    rebuild: bool = False,
    use_gpu: bool = False,
) -> IndexMeta | None:
    """Publish a version that holds exactly the catalog's vectors, unless the current one already does.

    ``factory`` None keeps an explicitly chosen factory and otherwise picks one by size
    (``vector_index.choose_factory``). ``rebuild`` forces a full rebuild. Returns the published (or unchanged
    current) metadata; None when the catalog is empty and nothing was ever published. Pass sessions of a
    reader engine: the catalog is read in one snapshot and written only to record the new version.
    """
    with store.publish_lock(index_dir):
        with read_snapshot(sessions) as session:
            current = store.current_meta(index_dir)
            plan = _plan(session, current, factory, rebuild)
            if plan is None:
                return current
            checkpoint, wanted, auto, ids, dim = plan
            index, search_defaults = None, None
            if (
                not rebuild
                and current is not None
                and (current.checkpoint_id, current.factory, current.dim)
                == (
                    checkpoint,
                    wanted,
                    dim,
                )
            ):
                outcome, index = _updated_copy(session, current, ids)
                if outcome == "unchanged":
                    return current
                search_defaults = current.search_defaults or None  # measured when it was built
            if index is None:
                fetch = functools.partial(fetch_embeddings, session)
                index, search_defaults = build_index(ids, dim, wanted, fetch, use_gpu=use_gpu)
        return publish_version(
            sessions,
            index_dir,
            index,
            checkpoint_id=checkpoint,
            factory=wanted,
            auto_factory=auto,
            search_defaults=search_defaults,
        )


def publish_version(sessions: sessionmaker[Session], index_dir: Path, index: faiss.Index, **options: Any) -> IndexMeta:
    """``store.publish(index_dir, index, **options)``, then the published version recorded in the catalog."""
    meta = store.publish(index_dir, index, **options)
    with session_scope(sessions) as session:
        session.add(
            IndexVersion(
                version=meta.version,
                checkpoint_id=meta.checkpoint_id,
                factory=meta.factory,
                vector_count=meta.vector_count,
                dim=meta.dim,
                path=str(meta.path),
            )
        )
    return meta


def _plan(
    session: Session, current: IndexMeta | None, factory: str | None, rebuild: bool
) -> tuple[str, str, bool, np.ndarray, int] | None:
    """(checkpoint, factory, chosen automatically, clip ids, dim) of the index the catalog asks for;
    None when there is nothing to publish (empty catalog, nothing published yet)."""
    checkpoint = single_checkpoint(session)
    ids = catalog_clip_ids(session)
    if checkpoint is None:
        if current is None or (current.vector_count == 0 and not rebuild):
            return None
        checkpoint = current.checkpoint_id  # everything was deleted: publish an empty index
    dim = _catalog_dim(session, ids) or (current.dim if current else 0)
    if dim == 0:
        raise IndexerError("cannot tell the embedding dimension: the catalog has no clips and no index")
    auto = factory is None and (current is None or current.auto_factory)
    if factory is not None:
        wanted = factory
    elif auto or current is None:
        wanted = vector_index.choose_factory(len(ids), dim)
    else:
        wanted = current.factory
    return checkpoint, wanted, auto, ids, dim


def _updated_copy(session: Session, current: IndexMeta, ids: np.ndarray) -> tuple[str, Any]:
    """("unchanged", None) when the current index holds exactly ``ids``; ("updated", index) with a copy
    that does after adding and removing vectors; ("rebuild", None) when it cannot be updated in place
    (duplicate ids, or an index type without removal)."""
    path = current.path / store.INDEX_FILE
    have = vector_index.index_ids(store.read_index_file(path))  # mapped: only the ids are read
    if len(np.unique(have)) != len(have):
        return "rebuild", None
    to_add = np.setdiff1d(ids, have, assume_unique=True)
    to_remove = np.setdiff1d(have, ids, assume_unique=True)
    if len(to_add) == 0 and len(to_remove) == 0:
        return "unchanged", None
    index = store.read_index_file(path, mmap=False)  # a private, writable copy
    if len(to_remove) and not vector_index.supports_remove(index):
        return "rebuild", None
    if len(to_remove):
        index.remove_ids(np.ascontiguousarray(to_remove, dtype=np.int64))
    vector_index.add_vectors(index, fetch_embeddings(session, to_add))
    log.info("index update: +%d -%d vectors", len(to_add), len(to_remove))
    return "updated", index


def _catalog_dim(session: Session, ids: np.ndarray) -> int:
    return embedding_dim(session, int(ids[0])) if len(ids) else 0


# --- verify and stats ------------------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    ok: bool
    problems: list[str] = field(default_factory=list)
    clips: int = 0
    vectors: int = 0


def _ids_text(ids: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def verify_index(sessions: sessionmaker[Session], index_dir: Path) -> VerifyReport:
    """Check that every clip of an indexed video has exactly one vector and every vector a clip."""
    problems: list[str] = []
    with read_snapshot(sessions) as session:
        ids = catalog_clip_ids(session)
        orphans = session.execute(
            select(Video.id, Video.status, func.count(Clip.id))
            .join(Clip, Clip.video_id == Video.id)
            .where(Video.status != VideoStatus.indexed)
            .group_by(Video.id, Video.status)
        ).all()
        for video_id, status, count in orphans[:10]:
            problems.append(f"video {video_id} is {status.value} but has {count} clips")
        checkpoints = indexed_checkpoints(session)
    current = store.current_meta(index_dir)
    if current is None:
        if len(ids):
            problems.append(f"no published index in {index_dir}, but the catalog has {len(ids)} clips")
        return VerifyReport(not problems, problems, clips=len(ids))
    index = store.read_index_file(current.path / store.INDEX_FILE)
    have = vector_index.index_ids(index)
    unique, counts = np.unique(have, return_counts=True)
    if (counts > 1).any():
        problems.append(f"clip ids with more than one vector: {_ids_text(unique[counts > 1])}")
    missing = np.setdiff1d(ids, unique, assume_unique=True)
    if len(missing):
        problems.append(f"clips without a vector in index v{current.version:06d}: {_ids_text(missing)}")
    extra = np.setdiff1d(unique, ids, assume_unique=True)
    if len(extra):
        problems.append(f"vectors without a clip of an indexed video: {_ids_text(extra)}")
    others = sorted(set(checkpoints) - {current.checkpoint_id})
    if others:
        problems.append(
            f"index checkpoint {current.checkpoint_id} but indexed videos of checkpoint(s) {', '.join(others)}"
        )
    if index.ntotal != current.vector_count:
        problems.append(f"index holds {index.ntotal} vectors, its metadata says {current.vector_count}")
    return VerifyReport(not problems, problems, clips=len(ids), vectors=int(index.ntotal))


def index_stats(sessions: sessionmaker[Session], index_dir: Path) -> dict[str, object]:
    """``{"videos", "clips", "vectors", "failed", "version", "factory", "checkpoint"}``."""
    with read_snapshot(sessions) as session:
        videos = session.scalar(select(func.count()).select_from(Video)) or 0
        clips = session.scalar(select(func.count()).select_from(Clip)) or 0
        failed = session.scalar(select(func.count()).select_from(Video).where(Video.status == VideoStatus.failed)) or 0
    current = store.current_meta(index_dir)
    return {
        "videos": int(videos),
        "clips": int(clips),
        "vectors": current.vector_count if current else 0,
        "failed": int(failed),
        "version": current.version if current else None,
        "factory": current.factory if current else None,
        "checkpoint": current.checkpoint_id if current else None,
    }
