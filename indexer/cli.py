"""``tvr ingest``, ``tvr delete``, ``tvr index stats|verify|rebuild`` and ``tvr db upgrade``; ``tvr collection``
is in ``collection_cli``.

Heavy libraries (torch, faiss, SQLAlchemy) are imported inside the commands so ``tvr --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from .settings import Settings
    from .subtitles import SubtitleTally

log = logging.getLogger(__name__)
EXIT_SOME_FAILED = 3  # `tvr ingest` finished, but some files could not be indexed

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", envvar="TVR_DATA_DIR", help="Catalog, index versions and thumbnails.", show_default=False
    ),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="TVR_DATABASE_URL",
        help="SQLAlchemy URL of the catalog (default: SQLite in the data directory).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object.")]

index_app = typer.Typer(help="Inspect, check and rebuild the vector index.", no_args_is_help=True)
db_app = typer.Typer(help="The catalog database.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("delete")(delete)
    app.add_typer(index_app, name="index")
    app.add_typer(db_app, name="db")


def _settings(**overrides: Any) -> Settings:
    from .settings import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _sessions(settings: Settings, *, writer: bool = False) -> sessionmaker[Session]:
    from .db import make_sessionmaker, open_catalog

    return make_sessionmaker(open_catalog(settings, writer=writer))


# --- ingest ------------------------------------------------------------------------------------------------


def ingest(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Video files and folders (walked recursively).", show_default=False)
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            help="CSV or JSONL manifest: path, optional title, collection and metadata per row.", show_default=False
        ),
    ] = None,
    collection: Annotated[
        str | None,
        typer.Option(
            help="The collection the videos go to (moving indexed ones there without re-encoding); a manifest "
            "row's collection wins. Default: new videos go to 'default', known ones stay where they are.",
            show_default=False,
        ),
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            envvar="TVR_CHECKPOINT", help="Encoder: checkpoint file/folder, packaged name, openclip:ARCH/TAG."
        ),
    ] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
    device: Annotated[str | None, typer.Option(envvar="TVR_DEVICE", help="cpu or cuda (default: cpu).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Clips per encoder call.")] = 32,
    workers: Annotated[
        int | None, typer.Option(min=0, help="Decoding processes (0: decode in this process; default: cores - 1).")
    ] = None,
    shard: Annotated[
        str | None, typer.Option(help="I/N: ingest only the I-th of N deterministic shards of the files.")
    ] = None,
    factory: Annotated[
        str | None, typer.Option(help="FAISS index_factory string, e.g. Flat, IVF4096,Flat, HNSW32,Flat.")
    ] = None,
    publish: Annotated[
        bool, typer.Option(help="Publish the index at the end (shards can leave it to `tvr index rebuild`).")
    ] = True,
    switch_checkpoint: Annotated[
        bool, typer.Option(help="Re-encode videos indexed with another checkpoint instead of refusing.")
    ] = False,
    single_clip_max: Annotated[
        float, typer.Option(min=0.1, help="Videos up to this many seconds are one clip.")
    ] = 30.0,
    window: Annotated[float, typer.Option(min=0.1, help="Longer videos: clip length in seconds.")] = 10.0,
    stride: Annotated[float, typer.Option(min=0.1, help="Longer videos: seconds between clip starts.")] = 5.0,
    progress: Annotated[bool | None, typer.Option(help="Progress bar (default: on a terminal).")] = None,
    decoder: Annotated[
        str,
        typer.Option(
            envvar="TVR_DECODER",
            help="auto (NVDEC when encoding on a CUDA GPU with PyNvVideoCodec, else cpu), cpu (worker processes; "
            "with --ray, CPU tasks) or nvdec (GPU decoding where the encoder is, with --ray in the GPU encoder "
            "actors; files it cannot decode going to the CPU).",
        ),
    ] = "auto",
    nvdec_sessions: Annotated[
        int, typer.Option(min=1, help="Files NVDEC decodes at once (threads; with --ray, per encoder actor).")
    ] = 4,
    ray: Annotated[
        bool, typer.Option("--ray", help='Decode and encode on a Ray cluster (needs: pip install "tvr\\[ray]").')
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            envvar="TVR_RAY_ADDRESS",
            help="With --ray: the cluster to join (auto: the running one; HOST:PORT); default: a local instance.",
            show_default=False,
        ),
    ] = None,
    ray_decoders: Annotated[
        int | None,
        typer.Option(min=1, help="With --ray: files decoded at once (default: the cluster's CPUs less the encoders')."),
    ] = None,
    ray_encoders: Annotated[
        int | None, typer.Option(min=1, help="With --ray: encoder actors (default: one per GPU, else one).")
    ] = None,
) -> None:
    """Index video files, folders or a manifest: resumable, idempotent, with a summary of what happened.

    Exit status: 0 when every video is indexed or unchanged; 3 when the run completed but some files failed
    (listed, recorded in the catalog and retried by the next run); 1 when an error stopped the run.
    """
    from .clips import ClipPolicy
    from .collections import check_collection_name
    from .encode import check_device
    from .errors import IndexerError
    from .pipeline import IngestOptions, default_workers
    from .pipeline import ingest as run_ingest
    from .ray_runner import RayOptions, import_ray
    from .sources import discover, parse_shard, select_shard

    if not paths and manifest is None:
        raise IndexerError("nothing to ingest: give video files or folders, or --manifest FILE")
    if collection is not None:
        check_collection_name(collection, "--collection")
    ray_options = None
    if ray:
        import_ray()  # says how to install it when missing
        # the cluster's nodes decode and encode (on `device`, or its GPUs when none is named); this process plans
        ray_options = RayOptions(ray_address, ray_decoders or workers or None, ray_encoders, device)
        device = "cpu"
    settings = _settings(data_dir=data_dir, database_url=database_url, checkpoint=checkpoint, device=device)
    check_device(settings.device)
    try:
        policy = ClipPolicy(single_max=single_clip_max, window=window, stride=stride)
    except ValueError as exc:
        raise IndexerError(f"clip options: {exc}") from None
    discovery = discover(paths or [], manifest, collection)
    if shard is not None:
        index, count = parse_shard(shard)
        before = len(discovery.sources)
        discovery.sources = select_shard(discovery.sources, index, count)
        log.info("shard %d/%d: %d of %d videos", index, count, len(discovery.sources), before)
    options = IngestOptions(
        batch_size=batch_size,
        workers=default_workers() if workers is None else workers,
        policy=policy,
        factory=factory,
        publish=publish,
        switch_checkpoint=switch_checkpoint,
        progress=progress,
        decoder=decoder,
        nvdec_sessions=nvdec_sessions,
        ray=ray_options,
    )
    args = {
        "paths": [str(p) for p in paths or []],
        "manifest": str(manifest) if manifest else None,
        "collection": collection,
        "checkpoint": settings.checkpoint,
        "device": settings.device,
        "batch_size": batch_size,
        "workers": options.workers,
        "decoder": decoder,
        "shard": shard,
        "factory": factory,
        "ray": {"address": ray_address, "decoders": ray_decoders, "encoders": ray_encoders} if ray else None,
        "policy": {"single_clip_max": single_clip_max, "window": window, "stride": stride},
    }
    summary = run_ingest(settings, discovery, options, args=args)
    rate = (summary.indexed + len(summary.failed)) / summary.seconds if summary.seconds else 0.0
    typer.echo(
        f"indexed {summary.indexed}, skipped {summary.skipped} unchanged, failed {len(summary.failed)}, "
        f"ignored {summary.ignored} non-video files; {summary.clips} clips in {summary.seconds:.1f} s "
        f"({rate:.2f} videos/s)"
    )
    if summary.moved:
        typer.echo(f"moved {summary.moved} unchanged videos to another collection")
    for path, reason in summary.failed:
        typer.echo(f"  failed: {path}: {reason}")
    _echo_subtitles(summary.subtitles)
    if summary.index is not None:
        meta = summary.index
        typer.echo(
            f"index v{meta.version:06d}: {meta.vector_count} vectors, {meta.factory}, checkpoint {meta.checkpoint_id}"
        )
    elif publish:
        typer.echo("index: nothing to publish (the catalog has no clips)")
    if summary.failed:  # the run completed, but a script or a scheduler must notice the files it could not read
        raise typer.Exit(EXIT_SOME_FAILED)


def _echo_subtitles(tally: SubtitleTally) -> None:
    """The run's subtitle tracks in a line, and each failed file's error (which names it)."""
    written = tally.added + tally.updated
    if not (written or tally.removed or tally.failed):
        return
    line = f"{written} subtitle tracks added or updated ({tally.added} new), {tally.removed} removed"
    typer.echo(line + (f", {len(tally.failed)} failed:" if tally.failed else ""))
    for _, error in tally.failed:
        typer.echo(f"  failed subtitles: {error}")


# --- delete ---------------------------------------------------------------------------------------------------


def delete(
    videos: Annotated[list[str], typer.Argument(help="Video ids or paths.", show_default=False)],
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Remove videos with their clips, embeddings and thumbnails, and republish the index."""
    from .records import delete_videos

    settings = _settings(data_dir=data_dir, database_url=database_url)
    removed = delete_videos(_sessions(settings, writer=True), videos)
    for video in removed:
        typer.echo(f"deleted video {video.id}: {video.path}")
    republish(settings)


def republish(settings: Settings) -> None:
    """Bring the published index in line with the catalog after a delete, and say which version holds it."""
    from .sync import sync_index

    meta = sync_index(_sessions(settings), settings.index_dir)
    if meta is not None:
        typer.echo(f"index v{meta.version:06d}: {meta.vector_count} vectors")


# --- index ----------------------------------------------------------------------------------------------------


@index_app.command("stats")
def index_stats(
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Counts of videos, clips, vectors and failures; the published version, factory and checkpoint; indexed
    videos, clips and hours per collection."""
    from .collection_cli import collection_rows, print_collections
    from .sync import index_stats as stats_of

    settings = _settings(data_dir=data_dir, database_url=database_url)
    sessions = _sessions(settings)
    stats = stats_of(sessions, settings.index_dir)
    collections = collection_rows(sessions)
    if as_json:
        typer.echo(json.dumps({**stats, "collections": [dataclasses.asdict(row) for row in collections]}))
        return
    for key, value in stats.items():
        typer.echo(f"{key:<11} {'-' if value is None else value}")
    typer.echo("")
    print_collections(collections)


@index_app.command("verify")
def index_verify(data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None) -> None:
    """Exit 0 only when every clip of an indexed video has exactly one vector and every vector a clip."""
    from .sync import verify_index

    settings = _settings(data_dir=data_dir, database_url=database_url)
    report = verify_index(_sessions(settings), settings.index_dir)
    if report.ok:
        typer.echo(f"ok: {report.clips} clips, {report.vectors} vectors, in agreement")
        return
    for problem in report.problems:
        typer.secho(f"disagreement: {problem}", err=True, fg=typer.colors.RED)
    raise typer.Exit(1)


@index_app.command("rebuild")
def index_rebuild(
    factory: Annotated[
        str | None, typer.Option(help="FAISS index_factory string (default: chosen by collection size).")
    ] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
    device: Annotated[str | None, typer.Option(envvar="TVR_DEVICE", help="cuda trains IVF on a GPU.")] = None,
) -> None:
    """Build a new index from the catalog's stored embeddings (no re-encoding) and publish it."""
    from .errors import IndexerError
    from .sync import sync_index

    settings = _settings(data_dir=data_dir, database_url=database_url, device=device)
    meta = sync_index(
        _sessions(settings), settings.index_dir, factory=factory, rebuild=True, use_gpu=settings.device != "cpu"
    )
    if meta is None:
        raise IndexerError("nothing to build: the catalog has no indexed videos")
    typer.echo(
        f"index v{meta.version:06d}: {meta.vector_count} vectors, {meta.factory}, checkpoint {meta.checkpoint_id}"
    )


# --- db -----------------------------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Apply the catalog's Alembic migrations (SQLite or PostgreSQL)."""
    from .db import current_revision, make_engine, redacted, upgrade

    settings = _settings(data_dir=data_dir, database_url=database_url)
    engine = make_engine(settings.catalog_url)
    try:
        before = current_revision(engine)
        upgrade(engine, revision)
        after = current_revision(engine)
    finally:
        engine.dispose()
    typer.echo(f"{redacted(settings.catalog_url)}: {before or 'empty'} -> {after}")
