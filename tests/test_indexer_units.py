"""Pieces of the indexer without a database: clip windows, sources and shards, the versioned FAISS store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import numpy as np
import pytest

from indexer import store, vector_index
from indexer.clips import ClipPolicy, clip_windows
from indexer.errors import IndexerError, IndexStoreError, ManifestError
from indexer.settings import Settings, default_data_dir
from indexer.sources import VIDEO_SUFFIXES, discover, parse_shard, read_manifest, select_shard, shard_of

# --- clips ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("duration", [0.0, 0.1, 12.5, 30.0])
def test_a_short_video_is_one_clip(duration: float) -> None:
    assert clip_windows(duration) == [(0.0, duration)]


def test_a_long_video_becomes_half_overlapping_windows_reaching_the_end() -> None:
    windows = clip_windows(120.0)
    assert windows[:3] == [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0)]
    assert windows[-2:] == [(105.0, 115.0), (110.0, 120.0)] and len(windows) == 23
    odd = clip_windows(31.0)
    assert odd[-1] == (21.0, 31.0) and odd[-2] == (20.0, 30.0)
    assert all(b[0] - a[0] <= 5.0 for a, b in zip(odd, odd[1:], strict=False))  # no gaps
    custom = clip_windows(100.0, ClipPolicy(single_max=60, window=20, stride=20))
    assert custom == [(0.0, 20.0), (20.0, 40.0), (40.0, 60.0), (60.0, 80.0), (80.0, 100.0)]


def test_clip_policy_rejects_gaps_and_nonsense() -> None:
    with pytest.raises(ValueError, match="gaps"):
        ClipPolicy(window=5, stride=10)
    with pytest.raises(ValueError, match="> 0"):
        ClipPolicy(window=0)
    with pytest.raises(ValueError, match="at least the window"):
        ClipPolicy(single_max=5, window=10)


# --- sources -------------------------------------------------------------------------------------------------


def test_discovery_walks_folders_by_suffix_case_insensitively(tmp_path: Path) -> None:
    names = ["a.mp4", "b.MKV", "sub/c.WebM", "sub/deeper/d.mov", "e.avi", "f.M4V", "g.txt", "sub/h.jpg", ".hidden.mp4"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    single = tmp_path / "elsewhere" / "named.bin"
    single.parent.mkdir()
    single.write_bytes(b"x")
    found = discover([tmp_path, single, tmp_path / "a.mp4"])
    paths = [s.path for s in found.sources]
    assert [p.name for p in paths] == ["a.mp4", "b.MKV", "e.avi", "named.bin", "f.M4V", "c.WebM", "d.mov"]
    assert all(p.is_absolute() for p in paths) and len(set(paths)) == len(paths)
    assert sorted(p.name for p in found.ignored) == ["g.txt", "h.jpg"]  # a named file is always tried
    assert {".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v"} == VIDEO_SUFFIXES
    with pytest.raises(IndexerError, match="no-such: no such file or folder"):
        discover([tmp_path / "no-such"])


def test_manifests_csv_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "x.mp4").write_bytes(b"x")
    csv = tmp_path / "m.csv"
    csv.write_text(
        'path,title,metadata,camera\nclips/x.mp4,"Title, with comma","{""a"": [1, 2]}",cam-7\n/abs/y.mp4,,,\n'
    )
    rows = read_manifest(csv)
    assert rows[0].path == (tmp_path / "clips" / "x.mp4").resolve()
    assert rows[0].title == "Title, with comma" and rows[0].metadata == {"a": [1, 2], "camera": "cam-7"}
    assert rows[1].path == Path("/abs/y.mp4") and rows[1].title is None and rows[1].metadata == {}
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"path": "clips/x.mp4", "title": "T", "metadata": {"k": "v"}, "lang": "fr"}\n')
    assert read_manifest(jsonl)[0].metadata == {"k": "v", "lang": "fr"}
    merged = discover([tmp_path / "clips"], jsonl)
    assert len(merged.sources) == 1 and merged.sources[0].title == "T"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("m.csv", "file\nx.mp4\n", "must name a 'path' column"),
        ("m.csv", 'path,metadata\nx.mp4,"{bad"\n', "m.csv:2: 'metadata' is not valid JSON"),
        ("m.jsonl", '{"path": "a"}\n[1]\n', "m.jsonl:2: expected a JSON object"),
        ("m.jsonl", '{"title": "no path"}\n', "m.jsonl:1: missing 'path'"),
        ("m.jsonl", '{"path": "a", "metadata": [1]}\n', "'metadata' must be an object"),
        ("m.txt", "path\n", "expected a .csv or .jsonl file"),
    ],
)
def test_manifest_errors_name_the_file_and_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ManifestError, match=message.replace("[", r"\[").replace("(", r"\(")):
        read_manifest(tmp_path / name)


def test_shards_are_deterministic_disjoint_and_complete(tmp_path: Path) -> None:
    from indexer.sources import Source

    sources = [Source(Path(f"/videos/{i:04d}.mp4")) for i in range(400)]
    parts = [select_shard(sources, i, 3) for i in (1, 2, 3)]
    assert sorted(s.path for part in parts for s in part) == [s.path for s in sources]
    assert all(90 < len(part) < 180 for part in parts)  # roughly even
    assert [shard_of(Path("/videos/0001.mp4"), 3)] * 2 == [shard_of(Path("/videos/0001.mp4"), 3) for _ in range(2)]
    assert (
        shard_of(Path("/videos/0001.mp4"), 3)
        == 1 + int.from_bytes(__import__("hashlib").sha1(b"/videos/0001.mp4").digest()[:8], "big") % 3
    )  # the same on every machine and Python version (no salted hash())
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "1", "a/b"):
        with pytest.raises(IndexerError, match="--shard"):
            parse_shard(bad)


def test_settings_read_tvr_variables_without_side_effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TVR_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("TVR_CHECKPOINT", "openclip:ViT-B-32/openai")
    monkeypatch.delenv("TVR_DATABASE_URL", raising=False)
    settings = Settings()
    assert settings.catalog_url == f"sqlite:///{(tmp_path / 'd').resolve()}/catalog.sqlite3"
    assert settings.checkpoint == "openclip:ViT-B-32/openai" and settings.uses_embedded_catalog
    assert not (tmp_path / "d").exists()
    monkeypatch.setenv("TVR_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert Settings().catalog_url == "postgresql+psycopg://u@h/db" and not Settings().uses_embedded_catalog
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache" / "tvr"


# --- the vector store ----------------------------------------------------------------------------------------


def unit_vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def flat_index(n: int, dim: int = 16) -> faiss.Index:
    index = vector_index.new_index(dim, "Flat")
    index.add_with_ids(unit_vectors(n, dim), np.arange(100, 100 + n, dtype=np.int64))
    return index


def test_factory_follows_collection_size_and_memory() -> None:
    assert vector_index.choose_factory(10, 512) == "Flat"
    assert vector_index.choose_factory(vector_index.FLAT_MAX_VECTORS - 1, 512) == "Flat"
    flat_max = vector_index.FLAT_MAX_VECTORS
    assert vector_index.choose_factory(flat_max, 512) == "IVF1024,Flat"  # 4 sqrt(1e5) = 1265 -> 1024
    assert vector_index.choose_factory(500_000, 512) == "IVF2048,Flat"  # 1 GB of floats
    assert vector_index.choose_factory(1_000_000, 512) == "IVF4096,SQfp16"  # 2 GB of floats: 16-bit codes instead
    assert vector_index.choose_factory(8_000_000, 512) == "IVF8192,SQ8"  # 8 GB of 16-bit codes: 8-bit instead
    assert vector_index.choose_factory(40_000_000, 512) == "IVF32768,PQ64"  # 20 GB of 8-bit codes: PQ instead
    with pytest.raises(IndexStoreError, match="'Bogus' is not a FAISS index_factory string"):
        vector_index.new_index(16, "Bogus")


def test_publish_writes_versions_beside_each_other_and_current_points_at_the_newest(tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    with pytest.raises(IndexStoreError, match="no published index"):
        store.open_published_index(tmp_path)
    first = store.publish(index_dir, flat_index(5), checkpoint_id="ck", factory="Flat")
    second = store.publish(index_dir, flat_index(7), checkpoint_id="ck", factory="Flat")
    assert (first.version, second.version) == (1, 2)
    assert (index_dir / "CURRENT").read_text() == "v000002\n"
    index, meta = store.open_published_index(tmp_path)
    assert (index.ntotal, meta.vector_count, meta.dim, meta.checkpoint_id) == (7, 7, 16, "ck")
    assert json.loads((first.path / "meta.json").read_text())["vector_count"] == 5  # the old one is intact
    assert list(vector_index.index_ids(index)) == list(range(100, 107))
    assert not list(index_dir.glob(".tmp-*"))


def test_old_versions_are_pruned_but_never_the_current_one(tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    for n in range(1, 6):
        store.publish(index_dir, flat_index(n), checkpoint_id="ck", factory="Flat", keep=2)
    assert store.list_versions(index_dir) == [4, 5]
    (index_dir / "CURRENT").write_text("v000004\n")  # e.g. rolled back by hand
    assert store.prune(index_dir, keep=1) == []  # 5 is newest, 4 current
    store.publish(index_dir, flat_index(1), checkpoint_id="ck", factory="Flat", keep=10)
    (index_dir / "CURRENT").write_text("v000004\n")
    assert store.prune(index_dir, keep=1) == [5]
    assert store.list_versions(index_dir) == [4, 6]


def test_a_publisher_killed_midway_leaves_the_published_version_untouched(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    index_dir = tmp_path / "index"
    store.publish(index_dir, flat_index(3), checkpoint_id="ck", factory="Flat")

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    monkeypatch.setattr(store, "_write_durably", crash)  # dies after writing index.faiss, before meta.json
    with pytest.raises(OSError, match="disk full"):
        store.publish(index_dir, flat_index(9), checkpoint_id="ck", factory="Flat")
    index, meta = store.open_published_index(tmp_path)
    assert (meta.version, index.ntotal) == (1, 3) and store.list_versions(index_dir) == [1]
    assert not list(index_dir.glob(".tmp-*"))


def test_a_taken_version_name_goes_to_the_next_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index_dir = tmp_path / "index"
    store.publish(index_dir, flat_index(2), checkpoint_id="ck", factory="Flat")
    real = store.list_versions
    # A concurrent publisher takes v000002 after this one listed the versions: the rename must collide
    # and move on to the next number, leaving the other publisher's folder alone.
    listed: list[list[int]] = []

    def stale_listing(folder: Path) -> list[int]:
        versions = real(folder)
        listed.append(versions)
        (folder / "v000002").mkdir(exist_ok=True)
        (folder / "v000002" / "x").write_text("theirs")
        return versions

    monkeypatch.setattr(store, "list_versions", stale_listing)
    meta = store.publish(index_dir, flat_index(3), checkpoint_id="ck", factory="Flat")
    assert listed[0] == [1]  # it saw only v000001, so it tried v000002 first
    assert meta.version == 3 and (index_dir / "v000002" / "x").read_text() == "theirs"
    assert real(index_dir) == [1, 2, 3]


def test_published_index_is_memory_mapped_read_only(tmp_path: Path) -> None:
    store.publish(tmp_path / "index", flat_index(50), checkpoint_id="ck", factory="Flat")
    index, _ = store.open_published_index(tmp_path)  # (adding to it would abort: the mapping is read-only)
    queries = unit_vectors(50)
    scores, ids = vector_index.search(index, queries[:3], 1)
    assert list(ids[:, 0]) == [100, 101, 102] and np.allclose(scores[:, 0], 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="dimension 8"):
        vector_index.search(index, unit_vectors(1, dim=8), 1)


@pytest.mark.parametrize(
    ("factory", "defaults", "param"),
    [
        ("IVF16,Flat", {"nprobe": 16}, "nprobe"),
        ("HNSW8,Flat", {"efSearch": 256}, "ef_search"),
        ("RR16,IVF16,Flat", {"nprobe": 16}, "nprobe"),
    ],
)
def test_search_parameters_are_passed_per_call(tmp_path: Path, factory: str, defaults: dict, param: str) -> None:
    vectors = unit_vectors(2000, 16, seed=1)
    index = vector_index.new_index(16, factory)
    vector_index.train_index(index, vectors)
    index.add_with_ids(vectors, np.arange(2000, dtype=np.int64))
    meta = store.publish(tmp_path / "index", index, checkpoint_id="ck", factory=factory)
    assert meta.search_defaults == defaults
    published = store.load_published_index(tmp_path)
    exact = vectors @ vectors[:20].T
    truth = np.argsort(-exact, axis=0)[:10].T
    _, narrow = published.search(vectors[:20], 10, **{param: 1})
    _, wide = published.search(vectors[:20], 10, **{param: 256})
    recall = lambda found: np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])  # noqa: E731
    assert recall(wide) >= 0.95 and recall(wide) > recall(narrow)
    if "IVF" in factory:  # the shared index is not changed by a call's parameters
        assert faiss.extract_index_ivf(published.index).nprobe == 1


def test_corrupt_current_pointer_is_reported(tmp_path: Path) -> None:
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "CURRENT").write_text("latest")
    with pytest.raises(IndexStoreError, match="expected a version name like v000001, got 'latest'"):
        store.open_published_index(tmp_path)
    (tmp_path / "index" / "CURRENT").write_text("v000001")
    os.makedirs(tmp_path / "index" / "v000001")
    with pytest.raises(IndexStoreError, match="cannot read the index metadata"):
        store.open_published_index(tmp_path)


def _unit_rows(rng: np.random.Generator, rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("spread", [0.05, 5.0], ids=["clustered", "diffuse"])
def test_calibrated_search_depth_reaches_the_target_recall_on_unseen_queries(spread) -> None:
    from indexer.calibration import TARGET_RECALL, RecallProbe, calibrate

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, 32))
    data = _unit_rows(rng, centres[rng.integers(0, 200, 20_000)] + spread * rng.normal(size=(20_000, 32)))
    ids = np.arange(20_000, dtype=np.int64) + 1000
    index = vector_index.new_index(32, "IVF256,Flat")
    vector_index.train_index(index, data[:10_000])
    sample = rng.choice(len(ids), 256, replace=False)
    probe = RecallProbe(ids[sample], data[sample])
    for begin in range(0, len(ids), 3000):  # the vectors stream past in batches, as from the catalog
        probe.update(ids[begin : begin + 3000], data[begin : begin + 3000])
        vector_index.add_vectors(index, [(ids[begin : begin + 3000], data[begin : begin + 3000])])
    exact = np.argsort(-(data[sample] @ data.T), axis=1)[:, :11] + 1000
    np.testing.assert_array_equal(np.sort(probe.ids, axis=1), np.sort(exact, axis=1))

    defaults = calibrate(index, probe)
    nprobe = defaults["nprobe"]
    # new queries (not stored vectors) drawn the same way: the calibrated depth holds its recall on them
    queries = _unit_rows(rng, centres[rng.integers(0, 200, 300)] + spread * rng.normal(size=(300, 32)))
    truth = np.argsort(-(queries @ data.T), axis=1)[:, :10] + 1000
    _, found = vector_index.search(index, queries, 10, nprobe=nprobe)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= TARGET_RECALL - 0.03, (nprobe, recall)
    _, shallower = vector_index.search(index, queries, 10, nprobe=max(1, nprobe // 4))
    assert nprobe == 256 or np.mean([len(set(f) & set(t)) / 10 for f, t in zip(shallower, truth, strict=True)]) < recall
    if spread < 0.1:
        assert nprobe <= 16  # clustered data needs few lists
    else:
        assert nprobe >= 32  # diffuse data needs many


def test_calibration_has_nothing_to_tune_on_exact_indexes() -> None:
    from indexer.calibration import RecallProbe, calibrate

    index = vector_index.new_index(8, "Flat")
    assert calibrate(index, RecallProbe(np.array([1]), np.ones((1, 8)))) == {}
