"""What the app loads once and shares: the text encoder, the catalog and the index it serves.

``Resources.load()`` runs in the background after start-up, so ``/healthz`` answers at once and
``/readyz`` says what is still missing. A checkpoint that does not match the index is fatal: the
server stops with a message naming both.

The catalog holds every embedding, so each replica keeps its own index in step with it, whichever machine
ingested: at start-up and on ``reload()`` it publishes into its data directory a version equal to the
catalog (``sync.sync_index``: nothing when the current one already is, an update when it can) and swaps
it in; every ``TVR_INDEX_SYNC_S`` seconds it compares a cheap fingerprint of the catalog's indexed clips
with the served index and, when they differ, does the same as a background job once the catalog has settled
(``CatalogWatch``), so a long ingest is not republished at every check. Replicas sharing a data
directory take turns (``store.publish_lock``); the first publishes, the others find it current. A swap
opens and checks the new index beside the old one, then one attribute assignment replaces it, and
requests that already hold the old one finish with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from indexer import store
from indexer.errors import IndexerError
from indexer.queries import Fingerprint, ids_fingerprint
from indexer.store import PublishedIndex
from indexer.sync import sync_index

from .batching import Query, QueryBatcher
from .examples import ExampleEncoder
from .index_state import (
    CatalogFollower,
    CatalogWatch,
    CheckpointMismatch,
    ReloadOutcome,
    attributes_changed,
    mismatch_message,
    served_index,
)
from .jobs import JobRunner
from .metrics import Metrics
from .search import SearchOptions, SearchResult, ServedIndex, search
from .settings import ServiceSettings

if TYPE_CHECKING:
    from model.protocols import VideoTextEncoder

log = logging.getLogger(__name__)

EncoderFactory = Callable[[ServiceSettings], "VideoTextEncoder"]
RETRY_SECONDS = 5.0  # how often a service without catalog or index looks for them again


class NotReady(Exception):
    """The service cannot answer searches yet (or any more); the message says why."""


def load_encoder_from_settings(settings: ServiceSettings) -> VideoTextEncoder:
    import torch

    from model import load_encoder

    if settings.threads:
        import faiss

        torch.set_num_threads(settings.threads)
        faiss.omp_set_num_threads(settings.threads)
    return load_encoder(settings.checkpoint, device=settings.device, text_precision=settings.query_precision)


class Resources:
    """The app's shared state: one per app, kept in ``app.state.resources``."""

    def __init__(
        self,
        settings: ServiceSettings,
        encoder_factory: EncoderFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clock = clock  # of the periodic check and the lag that readiness reports
        self._encoder_factory = encoder_factory or load_encoder_from_settings
        self.encoder: VideoTextEncoder | None = None
        self.metrics = Metrics()
        self.queries: QueryBatcher[ServedIndex, SearchOptions, SearchResult] = QueryBatcher(
            self._encode,
            self._search,
            max_batch=settings.batch_size,
            wait_s=settings.batch_wait_ms / 1000,
            cache_size=settings.cache_size,
            timeout_s=settings.search_timeout_s,
            metrics=self.metrics,
        )
        self.index: ServedIndex | None = None  # replaced whole, never mutated
        self.served_fingerprint: Fingerprint | None = None  # of the ids self.index holds
        self.catalog_watch = CatalogWatch(settings.index_sync_max_lag_s)
        self.follower = CatalogFollower(self)  # the periodic check against the catalog
        self.engine: Engine | None = None
        self.sessions: sessionmaker[Session] | None = None
        self.stage = "starting"  # what load() is doing, or why the service is not ready
        self.fatal: str | None = None  # set when the service must stop
        self.on_fatal: Callable[[str], None] | None = None  # the server's way to stop itself
        self.catalog_checkpoints: dict[str, int] = {}
        self._reload_lock = asyncio.Lock()
        self.jobs = JobRunner()  # index work off the request path (syncs, republishing after a delete)
        self.examples = ExampleEncoder(settings)  # uploaded images and videos, in a process of their own
        self._load_task: asyncio.Task[None] | None = None
        self._writer: Engine | None = None

    # --- life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.queries.start()
        await self.examples.start()
        self._load_task = asyncio.create_task(self._load_in_background(), name="tvr-load")

    async def close(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        await self.jobs.close()
        await self.examples.close()
        await self.queries.close()
        for engine in (self.engine, self._writer):
            if engine is not None:
                engine.dispose()
        self.metrics.ready.set(0)

    async def _load_in_background(self) -> None:
        try:
            await self.load()
            while not self.ready:  # a catalog or index that is not there yet: look again now and then
                await asyncio.sleep(RETRY_SECONDS)
                try:
                    await self.reload()
                except CheckpointMismatch:
                    raise
                except (NotReady, IndexerError) as exc:
                    log.debug("still not ready: %s", exc)
            await self.follower.run()
        except CheckpointMismatch as exc:
            self._die(str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("loading failed")
            self._die(f"loading failed: {type(exc).__name__}: {exc}")

    def _die(self, reason: str) -> None:
        self.fatal = self.stage = reason
        self.metrics.ready.set(0)
        log.error("cannot serve: %s", reason)
        if self.on_fatal is not None:
            self.on_fatal(reason)
        else:  # under a plain `uvicorn --factory service.app:create_app`: stop the way Ctrl+C does
            os.kill(os.getpid(), signal.SIGTERM)

    async def load(self) -> None:
        """Encoder, then catalog, then index; a missing catalog or index leaves the service not ready."""
        started = time.perf_counter()
        self.stage = f"loading the encoder ({self.settings.checkpoint})"
        # on the queries' thread, where it will run: one OpenMP pool for torch and FAISS (service/batching.py)
        self.encoder = await self.queries.run(self._encoder_factory, self.settings)
        await self.queries.run(self.encoder.encode_text, ["warm up"])  # first-call costs, off the first query
        log.info("encoder %s loaded (checkpoint %s)", self.settings.checkpoint, self.encoder.checkpoint_id)
        self.stage = "opening the catalog"
        try:
            await asyncio.to_thread(self._open_catalog)
        except IndexerError as exc:
            self.stage = f"catalog: {exc}"
            log.warning("not ready: %s", self.stage)
            return
        self.stage = "bringing the index in line with the catalog"
        async with self._reload_lock:
            try:
                await asyncio.to_thread(self._sync_from_catalog)
            except IndexerError as exc:  # serve what is published, if anything
                log.warning("%s; serving the newest published index", exc)
            self.stage = "opening the published index"
            try:
                await self._swap_in_newest()
            except IndexerError as exc:
                if isinstance(exc, CheckpointMismatch):
                    raise
                self.stage = f"index: {exc}"
                log.warning("not ready: %s", self.stage)
                return
        log.info("ready in %.1f s", time.perf_counter() - started)

    def _open_catalog(self) -> None:
        from indexer.db import make_sessionmaker, open_catalog

        self.engine = open_catalog(self.settings, auto_upgrade=False)
        self.sessions = make_sessionmaker(self.engine)

    # --- the index -----------------------------------------------------------------------------------

    async def reload(self) -> ReloadOutcome:
        """Bring this replica's index in line with the catalog, then swap in the newest published version
        (if it is newer); raises NotReady, CheckpointMismatch, or IndexerError when the sync fails."""
        if self.encoder is None or self.fatal is not None:
            raise NotReady(self.stage)
        async with self._reload_lock:
            if self.sessions is None:  # the catalog was missing at start-up: try again
                try:
                    await asyncio.to_thread(self._open_catalog)
                except IndexerError as exc:
                    self.stage = f"catalog: {exc}"
                    raise NotReady(self.stage) from exc
            await asyncio.to_thread(self._sync_from_catalog)
            return await self._swap_in_newest()

    def _sync_from_catalog(self) -> store.IndexMeta | None:
        """Publish into this replica's index folder a version holding exactly the catalog's vectors, unless the
        current one does (``sync.sync_index``; blocking: run it off the event loop)."""
        if self.sessions is None:
            raise NotReady(self.stage)
        before = store.current_version(self.settings.index_dir)
        try:
            meta = sync_index(self.sessions, self.settings.index_dir)
        except (OSError, SQLAlchemyError) as exc:
            raise IndexerError(f"cannot bring the index in line with the catalog: {exc}") from exc
        if meta is not None and meta.version != before:
            log.info("index synced from the catalog: published v%06d (%d vectors)", meta.version, meta.vector_count)
        return meta

    async def sync_job(self) -> int | None:
        """A job's work: sync and swap; the served version."""
        return (await self.reload()).version

    async def _swap_in_newest(self) -> ReloadOutcome:
        if self.encoder is None:
            raise NotReady(self.stage)
        checkpoint_id = self.encoder.checkpoint_id
        previous = self.index
        meta = await asyncio.to_thread(store.current_meta, self.settings.index_dir)
        if meta is None:
            raise store.IndexStoreError(
                f"no published index in {self.settings.index_dir}: run `tvr ingest` (or `tvr index rebuild`)"
            )
        if previous is not None and previous.meta.version == meta.version:
            self.metrics.index_reloads.labels("unchanged").inc()
            if await asyncio.to_thread(self._attributes_changed, previous):
                self.index = await asyncio.to_thread(self._served, previous)  # same vectors, new attributes
                self.catalog_watch.behind_since = None
                log.info("videos' attributes changed: filters of index v%06d read them again", meta.version)
            return ReloadOutcome(False, meta.version, meta.version, int(previous.index.ntotal))
        if meta.checkpoint_id != checkpoint_id:
            self.metrics.index_reloads.labels("refused").inc()
            raise CheckpointMismatch(mismatch_message(self.settings, checkpoint_id, meta))
        loaded = await asyncio.to_thread(store.load_published_index, self.settings.data_dir, mmap=True)
        if loaded.meta.checkpoint_id != checkpoint_id:  # published again meanwhile
            self.metrics.index_reloads.labels("refused").inc()
            raise CheckpointMismatch(mismatch_message(self.settings, checkpoint_id, loaded.meta))
        self.catalog_checkpoints = await asyncio.to_thread(self._catalog_checkpoints)
        fingerprint = await asyncio.to_thread(lambda: ids_fingerprint(loaded.ids()))
        served = await asyncio.to_thread(self._served, loaded)
        self.index, self.served_fingerprint = served, fingerprint  # the swap: reference assignments
        self.catalog_watch.behind_since = None  # until a check finds the catalog moved on again
        self.stage = "ready"
        self._publish_metrics(loaded)
        self.metrics.index_reloads.labels("swapped").inc()
        old = previous.meta.version if previous is not None else None
        log.info(
            "serving index v%06d (%d vectors, %s); previous %s",
            loaded.meta.version,
            loaded.index.ntotal,
            loaded.meta.factory,
            f"v{old:06d}" if old is not None else "none",
        )
        return ReloadOutcome(True, loaded.meta.version, old, int(loaded.index.ntotal))

    def _served(self, loaded: PublishedIndex) -> ServedIndex:
        with self.read_session() as session:
            return served_index(loaded, session)

    def _attributes_changed(self, served: ServedIndex) -> bool:
        with self.read_session() as session:
            return attributes_changed(served, session)

    def _catalog_checkpoints(self) -> dict[str, int]:
        from indexer.queries import indexed_checkpoints

        with self.read_session() as session:
            return indexed_checkpoints(session)

    def _publish_metrics(self, loaded: PublishedIndex) -> None:
        self.metrics.index_vectors.set(loaded.index.ntotal)
        self.metrics.index_version.set(loaded.meta.version)
        with contextlib.suppress(OSError):
            self.metrics.index_bytes.set((loaded.meta.path / store.INDEX_FILE).stat().st_size)
        self.metrics.ready.set(1)

    # --- what requests use -----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.fatal is None and self.encoder is not None and self.sessions is not None and self.index is not None

    def readiness(self) -> dict[str, Any]:
        index = self.index
        others = sorted(c for c in self.catalog_checkpoints if index is None or c != index.meta.checkpoint_id)
        return {
            "ready": self.ready,
            "stage": "ready" if self.ready else self.stage,
            "checkpoint": self.encoder.checkpoint_id if self.encoder is not None else None,
            "index_version": index.meta.version if index is not None else None,
            "index_checkpoint": index.meta.checkpoint_id if index is not None else None,
            "index_factory": index.meta.factory if index is not None else None,
            "vectors": int(index.index.ntotal) if index is not None else None,
            "catalog_other_checkpoints": others,
            "index_behind_catalog_s": self.catalog_watch.behind_s(self.clock()),
        }

    def require_ready(self) -> ServedIndex:
        """The index to answer with, or NotReady."""
        index = self.index
        if not self.ready or index is None:
            raise NotReady(self.stage)
        return index

    @contextlib.contextmanager
    def read_session(self) -> Iterator[Session]:
        if self.sessions is None:
            raise NotReady(self.stage)
        with self.sessions() as session:
            yield session

    def writer_sessions(self) -> sessionmaker[Session]:
        """Sessions of a writing engine (admin deletes), opened on first use."""
        from indexer.db import make_sessionmaker, open_catalog

        if self._writer is None:
            self._writer = open_catalog(self.settings, writer=True, auto_upgrade=False)
        return make_sessionmaker(self._writer)

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.encoder is None:
            raise NotReady(self.stage)
        return self.encoder.encode_text(list(texts)).cpu().numpy()

    def _search(self, queries: list[Query[ServedIndex, SearchOptions]]) -> list[SearchResult]:
        return search(queries, self.read_session, self.settings.result_window, self.metrics, self.settings.media_roots)
