"""Video files with HTTP range requests, and clip thumbnails, over real HTTP."""

from __future__ import annotations

import io

import pytest
from PIL import Image

pytest_plugins = ["service_fixtures"]


@pytest.fixture(scope="module")
def video(client) -> dict:
    return client.get("/videos/3").json()


@pytest.fixture(scope="module")
def data(video, service_corpus) -> bytes:
    return service_corpus.file(video["path"]).read_bytes()


def test_whole_file(client, video, data) -> None:
    response = client.get(f"/videos/{video['id']}/media")
    assert response.status_code == 200 and response.content == data
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["accept-ranges"] == "bytes" and int(response.headers["content-length"]) == len(data)


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, None),
        ("bytes=-50", -50, None),
        ("bytes=10-10", 10, 10),
        ("bytes=1000-999999", 1000, None),
        ("bytes=0-", 0, None),
    ],
)
def test_range_gets_206_with_exactly_those_bytes(client, video, data, header, first, last) -> None:
    response = client.get(f"/videos/{video['id']}/media", headers={"Range": header})
    assert response.status_code == 206, response.text
    begin = first if first >= 0 else len(data) + first
    end = len(data) - 1 if last is None else last
    assert response.content == data[begin : end + 1]
    assert response.headers["content-range"] == f"bytes {begin}-{end}/{len(data)}"
    assert int(response.headers["content-length"]) == end - begin + 1
    assert response.headers["content-type"] == "video/mp4"


@pytest.mark.parametrize("header", ["bytes={size}-", "bytes={size}-{size}", "bytes=50-10", "bytes=-0", "bytes=x-y"])
def test_bad_range_gets_416(client, video, data, header) -> None:
    header = header.format(size=len(data))
    response = client.get(f"/videos/{video['id']}/media", headers={"Range": header})
    assert response.status_code == 416, response.text
    assert response.headers["content-range"] == f"bytes */{len(data)}"
    assert "Range" in response.json()["detail"]


@pytest.mark.parametrize("header", ["pages=1-2", "items=0-9"])
def test_a_range_unit_the_server_does_not_know_is_ignored(client, video, data, header) -> None:
    response = client.get(f"/videos/{video['id']}/media", headers={"Range": header})  # RFC 9110, 14.2
    assert response.status_code == 200 and response.content == data and "content-range" not in response.headers


def test_several_ranges_get_the_whole_file(client, video, data) -> None:
    response = client.get(f"/videos/{video['id']}/media", headers={"Range": "bytes=0-1,5-9"})
    assert response.status_code == 200 and response.content == data


def test_a_seek_like_a_browser_makes(client, video, data) -> None:
    """Open-ended ranges from the middle, in small reads, reassemble the file."""
    pieces, offset = [], 0
    while offset < len(data):
        response = client.get(f"/videos/{video['id']}/media", headers={"Range": f"bytes={offset}-{offset + 999}"})
        assert response.status_code == 206
        pieces.append(response.content)
        offset += len(response.content)
    assert b"".join(pieces) == data


def test_every_clip_thumbnail_is_a_jpeg(client, video) -> None:
    assert len(video["clips"]) >= 2
    for clip in video["clips"]:
        response = client.get(clip["thumbnail_url"])
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        assert response.content[:3] == b"\xff\xd8\xff"
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.format == "JPEG" and image.width > 0 and image.height > 0


def test_a_thumbnail_is_cached_for_good_and_revalidated_by_its_etag(client, video) -> None:
    first, second = (client.get(clip["thumbnail_url"]) for clip in video["clips"][:2])
    etag = first.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/") and etag != second.headers["etag"]
    assert "immutable" in first.headers["cache-control"] and "max-age=" in first.headers["cache-control"]
    url = video["clips"][0]["thumbnail_url"]
    for held in (etag, f'"other", {etag}', f"W/{etag}", "*"):
        cached = client.get(url, headers={"If-None-Match": held})
        assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == etag, held
    stale = client.get(url, headers={"If-None-Match": second.headers["etag"]})
    assert stale.status_code == 200 and stale.content == first.content


def test_search_results_link_to_working_media_and_thumbnails(client) -> None:
    hit = client.get("/search", params={"q": "a blue square moves up", "k": 1}).json()["results"][0]
    assert client.get(hit["thumbnail_url"]).headers["content-type"] == "image/jpeg"
    media = client.get(hit["media_url"].split("#")[0], headers={"Range": "bytes=0-15"})
    assert media.status_code == 206 and b"ftyp" in media.content  # an MP4 file's first box
