"""Calibrated confidence over real HTTP: each result's confidence, ``min_confidence``, and what lacks one."""

from __future__ import annotations

import httpx
import pytest

from model.calibration import ScoreCalibration
from model.checkpoint import write_calibration

pytest_plugins = ["service_fixtures"]

QUERY = "a red circle moves to the right"
CALIBRATION = ScoreCalibration(slope=40.0, intercept=-2.0, pairs=100, matches=10, top_k=10, fitted_on="test")


@pytest.fixture
def calibrated(service_corpus, tmp_path, start_server):  # type: ignore[no-untyped-def]
    """A server over the session corpus with a calibrated copy of its checkpoint (same id, same index)."""
    checkpoint = write_calibration(service_corpus.checkpoint, CALIBRATION, tmp_path / "calibrated").parent
    server = start_server(service_corpus.settings(checkpoint=str(checkpoint)))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def _get(http: httpx.Client, **params: object) -> dict:
    response = http.get("/search", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_each_result_carries_the_checkpoints_confidence_in_its_score(calibrated, exact) -> None:
    hits = _get(calibrated, q=QUERY, k=20)["results"]
    scores = exact.scores(QUERY)
    assert len(hits) == 20
    for hit in hits:
        expected = float(CALIBRATION.confidence(scores[hit["clip_id"]]))
        assert 0.0 <= hit["confidence"] <= 1.0 and hit["confidence"] == pytest.approx(expected, abs=1e-4)
    assert [h["confidence"] for h in hits] == sorted((h["confidence"] for h in hits), reverse=True)
    several = calibrated.post("/search", json={"q": [QUERY, "a blue square moves up"], "k": 3}).json()
    assert all(h["confidence"] is not None for search in several["searches"] for h in search["results"])


def test_min_confidence_keeps_exactly_the_results_at_least_that_sure(calibrated, exact) -> None:
    everything = _get(calibrated, q=QUERY, k=100)["results"]
    sure = [h["confidence"] for h in everything]
    cut = next(i for i in range(3, len(sure)) if sure[i - 1] - sure[i] >= 0.002)  # a clear gap after 3 or more
    wanted = round((sure[cut - 1] + sure[cut]) / 2, 4)
    kept = _get(calibrated, q=QUERY, k=100, min_confidence=wanted)
    assert kept["total"] == cut and [h["clip_id"] for h in kept["results"]] == [h["clip_id"] for h in everything[:cut]]
    posted = calibrated.post("/search", json={"q": QUERY, "k": 100, "min_confidence": wanted}).json()
    assert posted["total"] == cut
    # with min_score as well, the stricter of the two applies
    assert _get(calibrated, q=QUERY, k=100, min_confidence=wanted, min_score=-1.0)["total"] == cut
    assert _get(calibrated, q=QUERY, k=100, min_confidence=0.0001, min_score=1.0)["total"] == 0


def test_a_search_by_example_has_no_confidence_and_refuses_min_confidence(calibrated) -> None:
    first = _get(calibrated, q=QUERY, k=1)["results"][0]
    liked = _get(calibrated, like=first["clip_id"], k=3)["results"]
    assert liked and all(h["confidence"] is None for h in liked)
    refused = calibrated.get("/search", params={"like": first["clip_id"], "min_confidence": 0.5})
    assert refused.status_code == 422 and "only for searches in words" in refused.json()["message"]


def test_a_checkpoint_without_calibration_says_how_to_get_one(client) -> None:
    hits = _get(client, q=QUERY, k=3)["results"]
    assert hits and all(h["confidence"] is None for h in hits)
    refused = client.get("/search", params={"q": QUERY, "min_confidence": 0.5})
    assert refused.status_code == 422 and "tvr confidence fit" in refused.json()["message"]
    for bad in (0, 1, 1.5, "sure"):
        assert client.get("/search", params={"q": QUERY, "min_confidence": bad}).status_code == 422


def test_a_moment_carries_the_confidence_of_its_score(calibrated, exact) -> None:
    video_id = exact.video_of(int(exact.clip_ids[0]))
    body = calibrated.get(f"/videos/{video_id}/moments", params={"q": QUERY}).json()
    assert body["moments"]
    for moment in body["moments"]:
        assert moment["confidence"] == pytest.approx(float(CALIBRATION.confidence(moment["score"])), abs=1e-4)
