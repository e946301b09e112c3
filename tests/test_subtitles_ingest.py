"""Subtitles through ingestion into the catalog's full-text index: real videos, sidecar files, manifests and
embedded streams, on SQLite (FTS5) and on a real PostgreSQL (``tsvector``), and migration 0006 itself."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from indexer_fixtures import (  # noqa: F401 (fixtures)
    catalog_url,
    make_settings,
    postgres_server_url,
    postgres_url,
    run_ingest,
    tiny_checkpoint,
    tiny_encoder,
    write_small_corpus,
)
from sqlalchemy import Connection, inspect, select, text
from typer.testing import CliRunner

from indexer import subtitles
from indexer.catalog import TextSegment, TextTrack, Video, include_in_autogenerate
from indexer.db import alembic_config, current_revision, make_engine, make_sessionmaker, open_catalog, upgrade
from indexer.records import delete_videos
from indexer.sources import Source
from indexer.subtitle_store import sync_file_tracks
from indexer.subtitles import SubtitleTally

DATA = Path(__file__).parent / "data" / "subtitles"
DOG = "1\n00:00:01,000 --> 00:00:02,000\nThe dog runs home\n"


def catalog(settings):  # type: ignore[no-untyped-def]
    return make_sessionmaker(open_catalog(settings))


def tracks_of(settings, video: Path) -> dict[str, TextTrack]:  # type: ignore[no-untyped-def]
    """The video's tracks by file name (or ``stream:N``)."""
    with catalog(settings)() as session:
        rows = session.scalars(
            select(TextTrack).join(Video, Video.id == TextTrack.video_id).where(Video.path == str(video.resolve()))
        )
        return {Path(t.source).name if not t.source.startswith("stream:") else t.source: t for t in rows}


def segment_texts(settings, track_id: int) -> list[str]:  # type: ignore[no-untyped-def]
    with catalog(settings)() as session:
        return list(session.scalars(select(TextSegment.text).where(TextSegment.track_id == track_id)))


_POSTGRES_FOUND = "SELECT text FROM text_segments WHERE tsv @@ websearch_to_tsquery('english', :w) ORDER BY id"
_SQLITE_FOUND = (
    "SELECT text FROM text_segments WHERE id IN "
    "(SELECT rowid FROM text_segments_fts WHERE text_segments_fts MATCH :w) ORDER BY id"
)


def found(conn: Connection, words: str) -> list[str]:
    """Texts of the segments the full-text index finds for ``words``: FTS5 on SQLite, ``tsvector`` on
    PostgreSQL (both stemming English)."""
    query = _POSTGRES_FOUND if conn.dialect.name == "postgresql" else _SQLITE_FOUND
    return list(conn.scalars(text(query), {"w": words}))


def matches(settings, words: str) -> list[str]:  # type: ignore[no-untyped-def]
    with catalog(settings)() as session:
        return found(session.connection(), words)


def fts_rowids(settings, word: str) -> list[int]:  # type: ignore[no-untyped-def]
    """What the SQLite FTS5 index alone holds for ``word`` (stale entries would show here)."""
    with catalog(settings)() as session:
        return list(
            session.scalars(text("SELECT rowid FROM text_segments_fts WHERE text_segments_fts MATCH :w"), {"w": word})
        )


def migrate(url: str) -> None:
    if url.startswith("postgresql"):
        upgrade(make_engine(url))


# --- SQLite ----------------------------------------------------------------------------------------------------


def test_sidecars_follow_their_files_and_go_with_their_video(tmp_path, tiny_checkpoint, tiny_encoder) -> None:  # noqa: F811
    folder = tmp_path / "videos"
    first_video, second_video = write_small_corpus(folder, 2)
    shutil.copy(DATA / "talk.srt", folder / "v0_000.srt")
    shutil.copy(DATA / "captions.en.vtt", folder / "v0_000.en.vtt")
    shutil.copy(DATA / "malformed.srt", folder / "v0_001.fr.srt")
    settings = make_settings(tmp_path, tiny_checkpoint)

    first = run_ingest(settings, [folder], tiny_encoder)
    assert (first.indexed, first.failed) == (2, [])  # a malformed subtitle file fails no video
    assert (first.subtitles.added, first.subtitles.updated, first.subtitles.removed) == (3, 0, 0)
    bad = str((folder / "v0_001.fr.srt").resolve())
    assert [source for source, _ in first.subtitles.failed] == [bad]
    tracks = tracks_of(settings, first_video)
    assert {name: (t.status, t.language, t.segments) for name, t in tracks.items()} == {
        "v0_000.srt": ("ok", None, 3),
        "v0_000.en.vtt": ("ok", "en", 3),
    }
    assert segment_texts(settings, tracks["v0_000.srt"].id)[0] == "The runners keep running\nacross the bridge"
    (failed,) = tracks_of(settings, second_video).values()
    assert (failed.status, failed.language, failed.segments) == ("failed", "fr", 0)
    assert failed.error == f"{bad}: no subtitle cue found: expected SubRip cues " + (
        "(a line '00:00:01,000 --> 00:00:04,000' followed by the cue's text)"
    )
    with catalog(settings)() as session:
        assert session.scalar(select(Video.status).where(Video.path == str(second_video.resolve()))) == "indexed"
    assert matches(settings, "jerry") == ["Tom & Jerry say goodbye"]
    assert matches(settings, "runs") == ["The runners keep running\nacross the bridge"]  # stemmed: running

    again = run_ingest(settings, [folder], tiny_encoder)  # nothing changed: nothing parsed or written
    assert (again.skipped, again.subtitles.unchanged, again.subtitles.added, again.subtitles.updated) == (2, 3, 0, 0)
    assert [source for source, _ in again.subtitles.failed] == [bad]  # still listed
    assert {t.id for t in tracks_of(settings, first_video).values()} == {t.id for t in tracks.values()}

    (folder / "v0_000.srt").write_text(DOG)  # edited
    (folder / "v0_000.en.vtt").unlink()  # removed
    shutil.copy(DATA / "talk.srt", folder / "v0_001.fr.srt")  # repaired
    third = run_ingest(settings, [folder], tiny_encoder)
    assert third.skipped == 2  # the videos themselves are unchanged
    assert (third.subtitles.added, third.subtitles.updated, third.subtitles.removed) == (0, 2, 1)
    assert third.subtitles.failed == []
    assert set(tracks_of(settings, first_video)) == {"v0_000.srt"}
    assert matches(settings, "running") == ["The dog runs home", "The runners keep running\nacross the bridge"]
    assert matches(settings, "york") == [] and fts_rowids(settings, "york") == []
    assert tracks_of(settings, second_video)["v0_001.fr.srt"].status == "ok"

    delete_videos(make_sessionmaker(open_catalog(settings, writer=True)), [str(first_video)])
    assert tracks_of(settings, first_video) == {}
    assert matches(settings, "dog") == [] and fts_rowids(settings, "dog") == []  # the cascade emptied FTS5
    assert matches(settings, "jerry") == ["Tom & Jerry say goodbye"]  # the other video's track stays
    with catalog(settings)() as session:  # FTS5 checks its index against the segments (raises if they differ)
        session.execute(text("INSERT INTO text_segments_fts(text_segments_fts, rank) VALUES ('integrity-check', 1)"))


def test_named_files_missing_files_and_failed_videos(tmp_path, tiny_checkpoint, tiny_encoder) -> None:  # noqa: F811
    folder = tmp_path / "videos"
    (video,) = write_small_corpus(folder, 1)
    (folder / "broken.mp4").write_bytes(b"not a video")
    shutil.copy(DATA / "latin1.srt", folder / "broken.srt")
    (tmp_path / "subs").mkdir()
    shutil.copy(DATA / "utf16.srt", tmp_path / "subs" / "named.de.srt")
    manifest = tmp_path / "list.csv"
    manifest.write_text('path,subtitles\nvideos/v0_000.mp4,"subs/named.de.srt;subs/missing.srt"\n')
    settings = make_settings(tmp_path, tiny_checkpoint)

    first = run_ingest(settings, [folder], tiny_encoder, manifest=manifest)
    assert first.indexed == 1 and [Path(p).name for p, _ in first.failed] == ["broken.mp4"]
    tracks = tracks_of(settings, video)
    assert {name: (t.status, t.language) for name, t in tracks.items()} == {
        "named.de.srt": ("ok", "de"),
        "missing.srt": ("failed", None),
    }
    missing = tmp_path / "subs" / "missing.srt"
    assert tracks["missing.srt"].error == f"{missing}: cannot read the subtitle file: No such file or directory"
    assert matches(settings, "quotes") == ["Ünïcödé in UTF-16 — «quotes»"]
    # a video that failed to decode keeps its subtitle files' tracks (search shows indexed videos only)
    assert tracks_of(settings, folder / "broken.mp4")["broken.srt"].segments == 2

    again = run_ingest(settings, [folder], tiny_encoder)  # without the manifest
    assert again.subtitles.removed == 1  # the missing file named by it
    assert set(tracks_of(settings, video)) == {"named.de.srt"}  # the named file that exists stays


def test_embedded_streams_are_read_again_only_with_new_content(
    tmp_path,
    monkeypatch,
    tiny_checkpoint,  # noqa: F811
    tiny_encoder,  # noqa: F811
) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    film = folder / "film.mkv"
    shutil.copy(DATA / "streams.mkv", film)
    settings = make_settings(tmp_path, tiny_checkpoint)

    first = run_ingest(settings, [folder], tiny_encoder)
    assert first.indexed == 1 and first.subtitles.added == 2
    tracks = tracks_of(settings, film)
    with catalog(settings)() as session:
        content_hash = session.scalar(select(Video.content_hash))
    assert {name: (t.language, t.segments, t.fingerprint) for name, t in tracks.items()} == {
        "stream:1": ("eng", 3, content_hash),
        "stream:2": ("fre", 1, content_hash),
    }
    assert matches(settings, "bridge") == ["over the bridge"]

    def unexpected(path: str, content_hash: str | None) -> list[subtitles.Track]:
        raise AssertionError(f"{path} was read again")

    with monkeypatch.context() as patch:
        patch.setattr(subtitles, "read_embedded_tracks", unexpected)
        film.touch()  # same bytes, new mtime: hashed, found unchanged
        again = run_ingest(settings, [folder], tiny_encoder)
    assert again.skipped == 1 and (again.subtitles.added, again.subtitles.updated) == (0, 0)

    shutil.copy(DATA / "mov_text.mp4", film)  # new content (an MP4 under the same name)
    third = run_ingest(settings, [folder], tiny_encoder)
    assert third.indexed == 1
    assert (third.subtitles.added, third.subtitles.updated, third.subtitles.removed) == (0, 1, 1)
    assert matches(settings, "bridge") == [] and matches(settings, "dog") == ["Dogs are running"]

    film.write_bytes(b"broken now")  # a video recorded as failed loses its streams' tracks with its clips
    fourth = run_ingest(settings, [folder], tiny_encoder)
    assert len(fourth.failed) == 1 and tracks_of(settings, film) == {}


def test_the_ingest_summary_lists_failed_subtitle_files(tmp_path: Path, tiny_checkpoint: str) -> None:  # noqa: F811
    from tvr_cli import app

    folder = tmp_path / "videos"
    write_small_corpus(folder, 1)
    shutil.copy(DATA / "talk.srt", folder / "v0_000.en.srt")
    shutil.copy(DATA / "empty.srt", folder / "v0_000.srt")
    env = {"TVR_DATA_DIR": str(tmp_path / "data"), "TVR_CHECKPOINT": tiny_checkpoint, "TVR_DATABASE_URL": ""}
    result = CliRunner().invoke(app, ["ingest", str(folder), "--workers", "0", "--device", "cpu"], env=env)
    assert result.exit_code == 0, result.output  # the video is indexed
    assert "2 subtitle tracks added or updated (2 new), 0 removed, 1 failed:" in result.output
    empty = (folder / "v0_000.srt").resolve()
    assert f"  failed subtitles: {empty}: the file is empty: expected SubRip cues" in result.output


# --- both backends ----------------------------------------------------------------------------------------------


def test_the_full_text_index_on_both_backends(catalog_url, tmp_path, tiny_checkpoint, tiny_encoder) -> None:  # noqa: F811
    folder = tmp_path / "videos"
    (video,) = write_small_corpus(folder, 1)
    (folder / "v0_000.srt").write_text(DOG)
    settings = make_settings(tmp_path, tiny_checkpoint, catalog_url)
    migrate(catalog_url)
    run_ingest(settings, [folder], tiny_encoder)
    assert matches(settings, "running") == ["The dog runs home"]  # stemmed in both backends
    assert matches(settings, "cat") == []

    shutil.copy(DATA / "latin1.srt", folder / "v0_000.srt")
    assert run_ingest(settings, [folder], tiny_encoder).subtitles.updated == 1
    assert matches(settings, "dog") == [] and matches(settings, "façade") == ["Café crème, naïve façade"]
    if not catalog_url.startswith("postgresql"):  # FTS5 removes diacritics; PostgreSQL's english keeps them
        assert matches(settings, "facade") == ["Café crème, naïve façade"]

    delete_videos(make_sessionmaker(open_catalog(settings, writer=True)), [str(video)])
    assert matches(settings, "façade") == []
    engine = make_engine(catalog_url)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM text_tracks")) == 0
        if engine.dialect.name == "postgresql":
            index = conn.scalar(text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_text_segments_tsv'"))
            assert index is not None and "USING gin (tsv)" in index
    engine.dispose()


def test_concurrent_syncs_leave_one_track_per_file(catalog_url: str, tmp_path: Path) -> None:  # noqa: F811
    video = tmp_path / "talk.mp4"
    video.write_bytes(b"")
    shutil.copy(DATA / "talk.srt", tmp_path / "talk.srt")
    shutil.copy(DATA / "captions.en.vtt", tmp_path / "talk.en.vtt")
    engine = make_engine(catalog_url, writer=True)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO videos (path, metadata, status, attempts, created_at, updated_at, collection) "
                "VALUES (:p, '{}', 'indexed', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'default')"
            ),
            {"p": str(video)},
        )
    tallies = [SubtitleTally() for _ in range(4)]
    errors: list[BaseException] = []

    def sync(tally: SubtitleTally) -> None:
        writer = make_engine(catalog_url, writer=True)
        try:
            sessions = make_sessionmaker(writer)
            sync_file_tracks(sessions, sessions, [Source(video)], tally)
        except BaseException as exc:
            errors.append(exc)
        finally:
            writer.dispose()

    threads = [threading.Thread(target=sync, args=(tally,)) for tally in tallies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT source, segments FROM text_tracks ORDER BY source")).all()
        assert [(Path(s).name, n) for s, n in rows] == [("talk.en.vtt", 3), ("talk.srt", 3)]
        assert conn.scalar(text("SELECT count(*) FROM text_segments")) == 6
    assert sum(t.added for t in tallies) == 2  # the others found them there (updated or unchanged)
    engine.dispose()


def test_migration_0006_upgrades_a_catalog_with_videos_and_downgrades(catalog_url: str) -> None:  # noqa: F811
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from alembic import command
    from indexer.catalog import Base

    engine = make_engine(catalog_url)
    config = alembic_config(catalog_url)
    command.upgrade(config, "0005")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO videos (path, metadata, status, attempts, created_at, updated_at, collection) "
                "VALUES ('/v/old.mp4', '{}', 'indexed', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'news')"
            )
        )
    command.upgrade(config, "0006")
    assert current_revision(engine) == "0006"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO text_tracks (video_id, source, status, segments, created_at) "
                "SELECT id, '/v/old.srt', 'ok', 1, CURRENT_TIMESTAMP FROM videos"
            )
        )
        conn.execute(
            text(
                'INSERT INTO text_segments (video_id, track_id, start, "end", text) '
                "SELECT video_id, id, 0, 1, 'People running' FROM text_tracks"
            )
        )
    with engine.connect() as conn:
        assert found(conn, "runs") == ["People running"]
        context = MigrationContext.configure(conn, opts={"include_name": include_in_autogenerate})
        assert compare_metadata(context, Base.metadata) == []  # the models and the migration agree
    assert {"text_tracks", "text_segments"} <= set(inspect(engine).get_table_names())

    command.downgrade(config, "0005")
    assert current_revision(engine) == "0005"
    tables = set(inspect(engine).get_table_names())
    assert not {t for t in tables if t.startswith("text_")}  # FTS5 tables and triggers went too
    with engine.connect() as conn:
        assert conn.execute(text("SELECT path, collection FROM videos")).all() == [("/v/old.mp4", "news")]
    command.upgrade(config, "head")  # and up again
    assert current_revision(engine) == "0006"
    engine.dispose()
