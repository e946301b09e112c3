"""The served index's state against the catalog: what the periodic check compares and when it syncs, what
a reload answers, and a published index made ready to serve (with the clip attributes its filters read)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from indexer import store, vector_index
from indexer.attributes import AttributesFingerprint, attributes_fingerprint, read_clip_attributes
from indexer.errors import IndexerError
from indexer.queries import Fingerprint, indexed_clips_fingerprint
from indexer.store import PublishedIndex

from .filtering import ClipFilter
from .search import ServedIndex
from .settings import ServiceSettings

if TYPE_CHECKING:
    from .jobs import Job
    from .resources import Resources

log = logging.getLogger(__name__)

# What the periodic check compares: the indexed clips' ids, and the indexed videos' attributes (filters)
CatalogState = tuple[Fingerprint, AttributesFingerprint]


class CheckpointMismatch(IndexerError):
    """The text encoder is not the one whose video encoder built the index."""


@dataclass
class CatalogWatch:
    """The settle rule of the periodic check: sync when the catalog is quiet (the same fingerprint at two
    checks in a row), or when the served index has been behind it for ``max_lag_s`` during a long ingest.
    Start-up and ``reload()`` sync at once and do not ask it."""

    max_lag_s: float
    last_seen: CatalogState | None = None  # the catalog's state at the previous check
    behind_since: float | None = None  # clock time of the first check that found the served index behind

    def sync_reason(self, catalog: CatalogState, served: CatalogState | None, now: float) -> str | None:
        """Record one check; why to sync now, or None (in step, or still changing and not yet too stale)."""
        quiet, self.last_seen = catalog == self.last_seen, catalog
        if catalog == served:
            self.behind_since = None
            return None
        if self.behind_since is None:
            self.behind_since = now
        lag = now - self.behind_since
        if quiet:
            return "catalog quiet"
        if lag >= self.max_lag_s:
            return f"lagging {lag:.0f} s"
        return None

    def behind_s(self, now: float) -> float | None:
        """Seconds the served index has been behind the catalog, as checks found it; None when in step."""
        return None if self.behind_since is None else now - self.behind_since


@dataclass(frozen=True)
class ReloadOutcome:
    reloaded: bool
    version: int
    previous: int | None
    vectors: int


def mismatch_message(settings: ServiceSettings, encoder_id: str, meta: store.IndexMeta) -> str:
    return (
        f"the published index v{meta.version:06d} in {meta.path.parent} was built with checkpoint "
        f"{meta.checkpoint_id}, but TVR_CHECKPOINT={settings.checkpoint} is checkpoint {encoder_id}: texts and "
        "videos would be embedded by different encoders. Serve with the checkpoint that built the index, or "
        "re-encode the collection with this one (`tvr ingest --switch-checkpoint ...`)"
    )


def served_index(loaded: PublishedIndex, session: Session) -> ServedIndex:
    """``loaded`` with the attributes of its clips read from the catalog (blocking), ready to filter."""
    vector_index.allow_reconstruct(loaded.index)  # exact scoring of few matching clips; dedupe
    return ServedIndex(loaded.index, loaded.meta, ClipFilter(read_clip_attributes(session, loaded.ids())))


def attributes_changed(served: ServedIndex, session: Session) -> bool:
    """Whether the catalog's videos changed since ``served`` read their attributes."""
    current = attributes_fingerprint(session)
    return served.clip_filter is None or served.clip_filter.attributes.fingerprint != current


class CatalogFollower:
    """The periodic check of a replica's served index against the catalog (``TVR_INDEX_SYNC_S``): when
    ``CatalogWatch`` says so, a background job syncs and swaps the index (``Resources.sync_job``)."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self._sync_job: Job | None = None

    def check(self) -> str | None:
        """One check (two aggregate queries; blocking): why to sync now, or None (``CatalogWatch``)."""
        resources = self.resources
        with resources.read_session() as session:
            catalog = (indexed_clips_fingerprint(session), attributes_fingerprint(session))
        return resources.catalog_watch.sync_reason(catalog, self.served_state(), resources.clock())

    def served_state(self) -> CatalogState | None:
        index, ids = self.resources.index, self.resources.served_fingerprint
        if index is None or ids is None or index.clip_filter is None:
            return None
        return ids, index.clip_filter.attributes.fingerprint

    async def run(self) -> None:
        """Every ``index_sync_s`` seconds (0: never), ``follow_once``."""
        interval = self.resources.settings.index_sync_s
        while interval > 0:
            await asyncio.sleep(interval)
            await self.follow_once()

    async def follow_once(self) -> Job | None:
        """Check the catalog and, when the settle rule says so, submit a background sync; that job."""
        from .resources import NotReady

        resources = self.resources
        if self._sync_job is not None and self._sync_job.finished_at is None:
            return None  # the last one is still queued or running
        try:
            reason = await asyncio.to_thread(self.check)
        except (NotReady, SQLAlchemyError) as exc:
            log.warning("index sync: cannot read the catalog: %s", exc)
            return None
        version = resources.index.meta.version if resources.index is not None else 0
        if reason is None:
            if resources.catalog_watch.behind_since is not None:
                log.debug("index sync: deferred, the catalog is still changing (served v%06d)", version)
            return None
        log.info("index sync: the catalog differs from the served index v%06d (%s); syncing", version, reason)
        self._sync_job = resources.jobs.submit("sync", resources.sync_job)
        return self._sync_job
