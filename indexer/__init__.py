"""The indexer: video files -> clips -> embeddings in a catalog database -> a published FAISS index.

Modules (import them directly; this package imports nothing, so ``tvr --help`` stays fast):

- ``settings``  ``Settings``: ``TVR_DATA_DIR``, ``TVR_DATABASE_URL``, ``TVR_CHECKPOINT``, ``TVR_DEVICE``.
- ``catalog``   SQLAlchemy models: ``Video``, ``Clip`` (with its float32 embedding), ``IndexVersion``,
  ``IngestionRun``. Migrations in ``indexer/migrations`` (Alembic).
- ``db``        engines (``open_catalog`` migrates an embedded SQLite catalog by itself), sessions, upgrades.
- ``store``     FAISS versions on disk: ``publish``, ``open_published_index`` / ``load_published_index``
  (memory-mapped, read-only), ``search`` with per-call ``nprobe`` / ``efSearch``, ``choose_factory``.
- ``queries``   reads for the service: ``clips_by_ids``, ``list_videos``, ``thumbnail_file``.
- ``sources``   folders, files and CSV/JSONL manifests to ``Source`` rows; ``--shard I/N``.
- ``clips``     ``ClipPolicy``: up to 30 s one clip, longer videos 10 s windows every 5 s.
- ``decode``    what decoding worker processes run (hash, probe, sample frames, thumbnails).
- ``pipeline``  ``ingest``: plan, decode in workers, encode in batches, commit per video, publish.
- ``records``   catalog writes (one transaction per video), ``delete_videos``.
- ``sync``      ``sync_index`` (update or rebuild the index from the catalog), ``verify_index``,
  ``index_stats``.
- ``cli``       ``tvr ingest``, ``tvr delete``, ``tvr index stats|verify|rebuild``, ``tvr db upgrade``.
"""
