"""The indexer: video files -> clips -> embeddings in a catalog database -> a published FAISS index.

Modules (import them directly; this package imports nothing, so ``tvr --help`` stays fast):

- ``settings``      ``Settings``: ``TVR_DATA_DIR``, ``TVR_DATABASE_URL``, ``TVR_CHECKPOINT``, ``TVR_DEVICE``.
- ``catalog``       SQLAlchemy models: ``Video``, ``Clip`` (with its float32 embedding), ``IndexVersion``,
  ``IngestionRun``. Migrations in ``indexer/migrations`` (Alembic).
- ``db``            engines (``open_catalog`` migrates an embedded SQLite catalog by itself), sessions.
- ``queries``       every catalog read shared by planning, sync and the service.
- ``records``       catalog writes (one transaction per video), ``delete_videos``.
- ``sources``       folders, files and CSV/JSONL manifests to ``Source`` rows; ``--shard I/N``.
- ``clips``         ``ClipPolicy``: up to 30 s one clip, longer videos 10 s windows every 5 s.
- ``planning``      which files need work; refusing to mix checkpoints.
- ``decode``        the decoding stage (hash, probe, sample frames, thumbnails), run in worker processes.
- ``workers``       the pool of decoding processes, with decoder crashes contained to their file.
- ``encode``        the encoding stage: decoded clips to embeddings on the encoder's device.
- ``runs``          one record per ``tvr ingest`` run.
- ``pipeline``      ``ingest``: plans, drives the stages through a runner, commits each video, publishes.
- ``local_runner``  the local loop: decoding processes (or NVDEC) ahead of the encoder, batches.
- ``progress``      ``IngestSummary`` and the progress bar.
- ``vector_index``  FAISS operations: ``choose_factory``, build, ``search`` with per-call ``nprobe``.
- ``store``         published index versions on disk: ``publish``, ``load_published_index`` (memory-mapped).
- ``builder``, ``calibration``  building an index from stored embeddings; measuring its search depth.
- ``sync``          ``sync_index`` (update or rebuild the index from the catalog), ``verify_index``,
  ``index_stats``.
- ``cli``           ``tvr ingest``, ``tvr delete``, ``tvr index stats|verify|rebuild``, ``tvr db upgrade``.
"""
