"""Named collections through the real ``tvr`` commands on real encoded videos and SQLite: ingesting into one
(the flag, a manifest's column winning over it), moving by re-ingest without re-encoding, rename, delete,
statistics per collection, bad names refused before anything is written, and the migration that puts a
catalog's existing videos in ``default`` (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest
import test_indexer_cli
from indexer_fixtures import (  # noqa: F401 (fixtures)
    catalog_url,
    postgres_server_url,
    postgres_url,
    tiny_checkpoint,
    write_small_corpus,
)
from sqlalchemy import inspect, text
from test_indexer_cli import invoke
from typer.testing import CliRunner

from indexer.collections import NAME_RULE, check_collection_name
from indexer.db import alembic_config, current_revision, head_revision, make_engine, upgrade
from indexer.errors import CollectionError, ManifestError
from indexer.sources import discover
from tvr_cli import app

cli_env = test_indexer_cli.cli_env  # the fixture: a data directory of its own, the tiny checkpoint
BAD_NAMES = ["News", "-news", "_x", "a b", "news!", "é", "a" * 65, ""]


def catalog(tmp_path: Path) -> Path:
    return tmp_path / "data" / "catalog.sqlite3"


def videos(tmp_path: Path) -> dict[str, dict]:
    """File name -> its catalog row (collection, metadata, status, times)."""
    with closing(sqlite3.connect(catalog(tmp_path))) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT path, collection, metadata, status, updated_at, indexed_at FROM videos").fetchall()
    return {Path(r["path"]).name: {**dict(r), "metadata": json.loads(r["metadata"])} for r in rows}


def clips(tmp_path: Path) -> set[tuple[int, int]]:
    """(clip id, video id) of every clip."""
    with closing(sqlite3.connect(catalog(tmp_path))) as db:
        return set(db.execute("SELECT id, video_id FROM clips").fetchall())


def collections(env: dict[str, str]) -> dict[str, dict]:
    result = invoke(env, "collection", "list", "--json")
    assert result.exit_code == 0, result.output
    return {row.pop("name"): row for row in json.loads(result.output)["collections"]}


def ingest(env: dict[str, str], *args: str, code: int = 0) -> str:
    result = invoke(env, "ingest", *args, "--workers", "0")
    assert result.exit_code == code, result.output
    return result.output


def test_names_follow_the_rule() -> None:
    for good in ["default", "a", "0", "news_2024-eu", "x" * 64, "9-lives"]:
        assert check_collection_name(good, "test") == good
    for bad in BAD_NAMES:
        with pytest.raises(CollectionError, match=r"^test: .* is not a collection name: expected 1 to 64") as info:
            check_collection_name(bad, "test")
        assert repr(bad) in str(info.value) and NAME_RULE in str(info.value)


def test_ingest_into_a_named_collection_with_stats_per_collection(tmp_path: Path, cli_env: dict[str, str]) -> None:
    write_small_corpus(tmp_path / "news", 2, seed=1)
    (tmp_path / "news" / "broken.mp4").write_bytes(b"not a video")
    write_small_corpus(tmp_path / "misc", 1, seed=2)

    ingest(cli_env, str(tmp_path / "news"), "--collection", "news", code=3)  # the broken file fails
    ingest(cli_env, str(tmp_path / "misc"))  # no --collection: default

    rows = videos(tmp_path)
    assert {name: r["collection"] for name, r in rows.items()} == {
        "v1_000.mp4": "news",
        "v1_001.mp4": "news",
        "broken.mp4": "news",  # a failed entry belongs to its collection too
        "v2_000.mp4": "default",
    }
    with closing(sqlite3.connect(catalog(tmp_path))) as db:
        seconds = dict(db.execute("SELECT collection, SUM(duration) FROM videos WHERE status = 'indexed' GROUP BY 1"))
    expected = {
        "default": {"videos": 1, "clips": 1, "hours": pytest.approx(seconds["default"] / 3600), "not_indexed": 0},
        "news": {"videos": 2, "clips": 2, "hours": pytest.approx(seconds["news"] / 3600), "not_indexed": 1},
    }
    assert collections(cli_env) == expected
    stats = json.loads(invoke(cli_env, "index", "stats", "--json").output)
    assert {row.pop("name"): row for row in stats["collections"]} == expected
    assert (stats["videos"], stats["clips"], stats["failed"]) == (4, 3, 1)
    table = invoke(cli_env, "index", "stats").output.splitlines()
    assert table[-3].split() == ["collection", "videos", "clips", "hours", "not", "indexed"]
    assert table[-2].split() == ["default", "1", "1", f"{seconds['default'] / 3600:.2f}", "0"]
    assert table[-1].split() == ["news", "2", "2", f"{seconds['news'] / 3600:.2f}", "1"]


def test_a_manifest_collection_wins_over_the_flag_and_stays_out_of_metadata(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    a, b, c = write_small_corpus(tmp_path / "videos", 3)
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,title,collection,year\n{a},A,sport,2020\n{b},B,,2021\n")

    ingest(cli_env, str(c), "--manifest", str(manifest), "--collection", "news")

    rows = videos(tmp_path)
    assert {name: (r["collection"], r["metadata"]) for name, r in rows.items()} == {
        a.name: ("sport", {"year": "2020"}),
        b.name: ("news", {"year": "2021"}),  # an empty cell: the flag's
        c.name: ("news", {}),  # named on the command line: the flag's
    }

    lines = [
        {"path": str(a), "collection": "sport", "tags": ["x"]},
        {"path": str(b), "collection": None},
        {"path": str(c), "metadata": {"collection": "kept"}},  # metadata's own key is metadata
    ]
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    found = {s.path.name: (s.collection, s.metadata) for s in discover([], jsonl, "news").sources}
    assert found == {
        a.name: ("sport", {"tags": ["x"]}),
        b.name: ("news", {}),
        c.name: ("news", {"collection": "kept"}),
    }
    assert {s.path.name: s.collection for s in discover([], jsonl).sources} == {
        a.name: "sport",
        b.name: None,  # no flag: a known video stays where it is, a new one goes to default
        c.name: None,
    }
    jsonl.write_text(json.dumps({"path": str(a), "collection": 5}) + "\n")
    with pytest.raises(ManifestError, match=rf"{jsonl}:1: 'collection' must be a string, got int"):
        discover([], jsonl)


def test_reingesting_into_another_collection_moves_without_reencoding(tmp_path: Path, cli_env: dict[str, str]) -> None:
    folder = tmp_path / "videos"
    first, second = write_small_corpus(folder, 2)
    ingest(cli_env, str(folder))
    before, clips_before = videos(tmp_path), clips(tmp_path)

    output = ingest(cli_env, str(folder), "--collection", "archive")

    assert "indexed 0, skipped 2 unchanged" in output and "moved 2 unchanged videos" in output
    after = videos(tmp_path)
    assert {r["collection"] for r in after.values()} == {"archive"}
    assert clips(tmp_path) == clips_before  # the same clips: nothing was encoded again
    for name, row in after.items():
        assert row["indexed_at"] == before[name]["indexed_at"]
        assert row["updated_at"] > before[name]["updated_at"]  # how a server notices the move

    output = ingest(cli_env, str(folder))  # without --collection: they stay where they are
    assert "moved" not in output and {r["collection"] for r in videos(tmp_path).values()} == {"archive"}

    # a touched file (same bytes, new mtime) is hashed by a decoder, found unchanged, and moved too
    stat = os.stat(first)
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    output = ingest(cli_env, str(folder), "--collection", "news")
    assert "indexed 0, skipped 2 unchanged" in output and "moved 2 unchanged videos" in output
    assert {name: r["collection"] for name, r in videos(tmp_path).items()} == {first.name: "news", second.name: "news"}
    assert clips(tmp_path) == clips_before
    assert invoke(cli_env, "index", "verify").exit_code == 0


def test_rename_moves_a_collection_and_refuses_a_name_in_use(tmp_path: Path, cli_env: dict[str, str]) -> None:
    ingest(cli_env, *map(str, write_small_corpus(tmp_path / "a", 2, seed=1)), "--collection", "a")
    ingest(cli_env, *map(str, write_small_corpus(tmp_path / "b", 1, seed=2)), "--collection", "b")
    before, clips_before = videos(tmp_path), clips(tmp_path)

    taken = invoke(cli_env, "collection", "rename", "a", "b")
    assert taken.exit_code == 1
    assert "rename: collection 'b' already exists (1 videos): choose another name" in taken.output
    missing = invoke(cli_env, "collection", "rename", "zzz", "c")
    assert missing.exit_code == 1 and "rename: no collection named 'zzz'" in missing.output
    assert videos(tmp_path) == before  # neither wrote anything

    renamed = invoke(cli_env, "collection", "rename", "a", "c")

    assert renamed.exit_code == 0 and "renamed collection a to c: 2 videos" in renamed.output
    after = videos(tmp_path)
    assert sorted(r["collection"] for r in after.values()) == ["b", "c", "c"]
    for name, row in after.items():
        moved = before[name]["collection"] == "a"
        assert (row["updated_at"] > before[name]["updated_at"]) is moved
    assert clips(tmp_path) == clips_before
    assert set(collections(cli_env)) == {"b", "c"}


def test_delete_removes_every_video_of_the_collection_from_catalog_and_index(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    write_small_corpus(tmp_path / "old", 2, seed=1)
    (tmp_path / "old" / "broken.mp4").write_bytes(b"not a video")
    ingest(cli_env, str(tmp_path / "old"), "--collection", "old", code=3)
    ingest(cli_env, *map(str, write_small_corpus(tmp_path / "keep", 1, seed=2)))

    declined = invoke_with_input(cli_env, "n\n", "collection", "delete", "old")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert "Delete collection old: 2 indexed videos (2 clips, 0.00 h) and 1 entries not indexed" in declined.output
    assert len(videos(tmp_path)) == 4

    deleted = invoke(cli_env, "collection", "delete", "old", "--yes")

    assert deleted.exit_code == 0, deleted.output
    assert "deleted collection old: 3 videos" in deleted.output and "index v000003: 1 vectors" in deleted.output
    assert {name: r["collection"] for name, r in videos(tmp_path).items()} == {"v2_000.mp4": "default"}
    with closing(sqlite3.connect(catalog(tmp_path))) as db:
        assert db.execute("SELECT COUNT(*) FROM clips").fetchone() == (1,)
        assert db.execute("SELECT COUNT(*) FROM clip_thumbnails").fetchone() == (1,)
    verified = invoke(cli_env, "index", "verify")
    assert verified.exit_code == 0 and "ok: 1 clips, 1 vectors" in verified.output
    assert set(collections(cli_env)) == {"default"}
    again = invoke(cli_env, "collection", "delete", "old", "--yes")
    assert again.exit_code == 1 and "delete: no collection named 'old'" in again.output


def invoke_with_input(env: dict[str, str], answer: str, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), env=env, input=answer)


@pytest.mark.parametrize("name", BAD_NAMES[:-1])  # an empty --collection is refused the same way (last case)
def test_a_bad_name_from_the_flag_is_refused_before_anything_is_written(
    name: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    write_small_corpus(tmp_path / "videos", 1)
    result = invoke(cli_env, "ingest", str(tmp_path / "videos"), "--collection", name)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"--collection: {name!r} is not a collection name" in result.output and NAME_RULE in result.output
    assert not (tmp_path / "data").exists()


def test_bad_names_from_a_manifest_line_and_the_collection_commands_write_nothing(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    a, b = write_small_corpus(tmp_path / "videos", 2)
    csv = tmp_path / "list.csv"
    csv.write_text(f"path,collection\n{a},news\n{b},Sport News\n")
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text(json.dumps({"path": str(a)}) + "\n\n" + json.dumps({"path": str(b), "collection": "x/y"}) + "\n")
    cases = [
        (["ingest", "--manifest", str(csv), "--collection", "ok"], f"{csv}:3: 'Sport News' is not a collection name"),
        (["ingest", "--manifest", str(jsonl)], f"{jsonl}:3: 'x/y' is not a collection name"),
        (["ingest", str(a), "--collection", ""], "--collection: '' is not a collection name"),
        (["collection", "rename", "default", "Default"], "rename: NEW: 'Default' is not a collection name"),
        (["collection", "rename", "a b", "c"], "rename: OLD: 'a b' is not a collection name"),
        (["collection", "delete", "Old", "--yes"], "delete: 'Old' is not a collection name"),
    ]
    for args, message in cases:
        result = invoke(cli_env, *args)
        assert result.exit_code == 1, result.output
        assert message in result.output and NAME_RULE in result.output, result.output
    assert not (tmp_path / "data").exists()  # no catalog was even created


def test_the_migration_puts_existing_videos_in_default(catalog_url: str) -> None:  # noqa: F811
    """A catalog at revision 0004 (before collections) keeps its videos, all in ``default``."""
    from alembic import command

    engine = make_engine(catalog_url)
    config = alembic_config(catalog_url)
    config.stdout = sys.stdout  # alembic's default is the stdout of its import, maybe a CliRunner's, closed since
    command.upgrade(config, "0004")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO videos (path, title, metadata, status, attempts, created_at, updated_at)"
                " VALUES ('/old/a.mp4', 'old', '{}', 'indexed', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.begin() as conn:
        assert conn.execute(text("SELECT path, title, collection FROM videos")).all() == [
            ("/old/a.mp4", "old", "default")
        ]
        conn.execute(  # a writer that knows nothing of collections (an older ingester) still lands in default
            text(
                "INSERT INTO videos (path, metadata, status, attempts, created_at, updated_at)"
                " VALUES ('/old/b.mp4', '{}', 'failed', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        assert conn.execute(text("SELECT collection FROM videos WHERE path = '/old/b.mp4'")).scalar() == "default"
        assert "ix_videos_collection" in {index["name"] for index in inspect(conn).get_indexes("videos")}
    command.check(config)  # the models and the migrations agree
    engine.dispose()
