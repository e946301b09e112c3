"""``tvr demo``: its example searches, its ``--videos`` bounds, and a corpus that follows the encoder's input size."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

pytest_plugins = ["service_fixtures"]


def test_the_example_queries_name_the_whole_vocabulary_and_each_has_a_clip_in_the_default_corpus() -> None:
    from model.train.synth import COLOURS, MOTIONS, SHAPES, draw_scenes
    from service.demo import DEMO_SEED, DEMO_VIDEOS, EXAMPLE_QUERIES, example_texts

    assert {q.colour for q in EXAMPLE_QUERIES} == set(COLOURS)
    assert {q.shape for q in EXAMPLE_QUERIES} == set(SHAPES)
    assert {m for q in EXAMPLE_QUERIES for m in q.motions} == set(MOTIONS)
    assert sum(len(q.motions) == 2 for q in EXAMPLE_QUERIES) >= 2
    assert 8 <= len(EXAMPLE_QUERIES) <= 10 and len(set(example_texts())) == len(EXAMPLE_QUERIES)
    scenes = draw_scenes(DEMO_VIDEOS, DEMO_SEED)
    for query in EXAMPLE_QUERIES:
        matching = [s.caption for s in scenes if query.matches(s)]
        assert matching, f"no clip of the default demo corpus matches {query.text!r}"
        words = matching[0].replace(" small", "").replace(" large", "").replace(" slowly", "").replace(" quickly", "")
        assert words.startswith(query.text), (query.text, matching[0])  # the captions' own words, in order
    assert example_texts()[-2] == "a yellow square moves to the right, then moves up"


def test_a_one_motion_query_is_answered_by_the_clips_first_motion() -> None:
    from model.train.synth import Scene
    from service.demo import ExampleQuery

    query = ExampleQuery("red", "circle", ("moves up",))
    scene = Scene("red", "circle", "moves up", "moves to the left", "small", "slowly", "black")
    assert query.matches(scene)
    assert not ExampleQuery("red", "circle", ("moves to the left",)).matches(scene)
    assert not ExampleQuery("red", "circle", ("moves up", "moves down")).matches(scene)
    assert ExampleQuery("red", "circle", ("moves up", "moves to the left")).matches(scene)
    assert not ExampleQuery("red", "square", ("moves up",)).matches(scene)


@pytest.mark.parametrize("videos", ["0", "2881", "5000"])
def test_demo_videos_outside_the_scene_space_is_a_usage_error_before_anything_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, videos: str
) -> None:
    import service.resources
    from tvr_cli import app

    def never(_: object) -> None:
        raise AssertionError("the encoder was loaded")

    monkeypatch.setattr(service.resources, "load_encoder_from_settings", never)
    data_dir = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--videos", videos, "--data-dir", str(data_dir)])
    assert result.exit_code == 2, result.output
    assert "--videos" in result.output and f"{videos} is not between 1 and 2880" in result.output, result.output
    assert "Traceback" not in result.output and not data_dir.exists()


def test_demo_videos_up_to_the_scene_space_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.resources
    from tvr_cli import app

    class Loaded(Exception):
        pass

    def loading(_: object) -> None:
        raise Loaded

    monkeypatch.setattr(service.resources, "load_encoder_from_settings", loading)
    result = CliRunner().invoke(app, ["demo", "--videos", "2880", "--data-dir", str(tmp_path / "demo")])
    assert isinstance(result.exception, Loaded), result.output  # past the option's check, to the encoder


@pytest.fixture(scope="module")
def tiny_96(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The tiny encoder with a 96-pixel input (the ``tiny`` config's is 64)."""
    import torch

    from model import create_model, get_config, load_encoder, save_checkpoint

    config = get_config("tiny")
    assert isinstance(config.backbone.arch, dict)
    config.backbone.arch["vision_cfg"]["image_size"] = 96
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt96") / "tiny96"
    save_checkpoint(create_model(config), path)
    encoder = load_encoder(str(path))
    assert encoder.image_size == 96
    return str(path), encoder


def corpus_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "demo-corpus" / "videos").glob("*.mp4"))


def frame_size(path: Path) -> tuple[int, int]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height


@pytest.mark.slow
def test_a_checkpoint_of_another_input_size_rewrites_and_reindexes_the_demo_corpus(
    tmp_path: Path, tiny_checkpoint: str, tiny_encoder, tiny_96
) -> None:
    from sqlalchemy import select

    from indexer.catalog import Video, VideoStatus
    from indexer.db import make_sessionmaker, open_catalog, read_snapshot
    from indexer.settings import Settings
    from indexer.store import current_meta
    from indexer.sync import verify_index
    from service.demo import build_demo

    data_dir = tmp_path / "demo"
    build_demo(Settings(data_dir=data_dir, checkpoint=tiny_checkpoint, database_url="", device="cpu"), tiny_encoder, 4)
    assert [frame_size(p) for p in corpus_files(data_dir)] == [(64, 64)] * 4

    checkpoint_96, encoder_96 = tiny_96
    settings = Settings(data_dir=data_dir, checkpoint=checkpoint_96, database_url="", device="cpu")
    build_demo(settings, encoder_96, 3)  # a smaller corpus too: the fourth video must leave the catalog
    files = corpus_files(data_dir)
    assert [frame_size(p) for p in files] == [(96, 96)] * 3

    engine = open_catalog(settings)
    sessions = make_sessionmaker(engine)
    with read_snapshot(sessions) as session:
        videos = session.scalars(select(Video).order_by(Video.path)).all()
        assert [Path(v.path) for v in videos] == [p.resolve() for p in files]
        for video, file in zip(videos, files, strict=True):
            assert video.status == VideoStatus.indexed and video.checkpoint_id == encoder_96.checkpoint_id
            assert video.content_hash == hashlib.sha256(file.read_bytes()).hexdigest()
            assert (video.width, video.height) == (96, 96)
    report = verify_index(sessions, settings.index_dir)  # every clip of these videos, and no other, has a vector
    engine.dispose()
    assert report.ok and report.vectors == report.clips > 0, report.problems
    meta = current_meta(settings.index_dir)
    assert meta is not None and meta.checkpoint_id == encoder_96.checkpoint_id


@pytest.mark.slow
def test_only_a_demo_server_has_the_example_queries(service_corpus, live_server, start_server, tiny_encoder) -> None:
    from service.demo import example_texts

    demo = start_server(service_corpus.settings(), encoder_factory=lambda _: tiny_encoder, demo_queries=example_texts())
    with httpx.Client(base_url=demo.url, timeout=30) as http:
        assert http.get("/demo/queries").json() == {"queries": example_texts()}
        operation = http.get("/openapi.json").json()["paths"]["/demo/queries"]["get"]
        assert operation["tags"] == ["demo"] and "200" in operation["responses"]
        assert "<body data-demo>" in http.get("/").text
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        assert http.get("/demo/queries").status_code == 404
        assert not any(path.startswith("/demo") for path in http.get("/openapi.json").json()["paths"])
        assert "data-demo" not in http.get("/").text
