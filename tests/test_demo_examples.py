"""The shipped demo checkpoint on ``tvr demo``'s own corpus: every example search on the page finds a clip of
the right colour, shape and direction(s) first (issue 15), through a real server with the demo's settings."""

from __future__ import annotations

import httpx
import pytest

from model.train.synth import draw_scenes
from service.demo import DEMO_SEED, DEMO_VIDEOS, EXAMPLE_QUERIES, build_demo, example_texts

pytest_plugins = ["service_fixtures"]


@pytest.mark.slow
def test_every_example_search_of_the_demo_page_finds_the_right_clip_first(tmp_path, start_server) -> None:
    from service.resources import load_encoder_from_settings
    from service.settings import ServiceSettings

    settings = ServiceSettings(data_dir=tmp_path / "demo", checkpoint="demo", database_url="")  # int8 queries
    encoder = load_encoder_from_settings(settings)
    build_demo(settings, encoder, DEMO_VIDEOS)
    server = start_server(settings, encoder_factory=lambda _: encoder, demo_queries=example_texts())
    scenes = {scene.caption: scene for scene in draw_scenes(DEMO_VIDEOS, DEMO_SEED)}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/demo/queries").json()["queries"] == [q.text for q in EXAMPLE_QUERIES]
        wrong = []
        for query in EXAMPLE_QUERIES:
            (first,) = http.get("/search", params={"q": query.text, "k": 1}).json()["results"]
            scene = scenes[first["video"]["title"]]
            if not (query.right_colour(scene) and query.right_shape(scene) and query.right_motions(scene)):
                wrong.append((query.text, scene.caption))
    assert wrong == []
