"""Every malformed request gets a 4xx whose message says what is wrong; none reaches a file it should not."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest

pytest_plugins = ["service_fixtures"]

LONG = "x" * 1001
BAD_REQUESTS = [
    # (method, path, query params, JSON body or raw bytes, status, words the message must contain)
    ("GET", "/search", {"q": ""}, None, 422, "q must not be empty"),
    ("GET", "/search", {"q": "   \t "}, None, 422, "q must not be empty or only spaces"),
    ("GET", "/search", {"q": LONG}, None, 422, "q is too long: at most 1000 characters"),
    ("GET", "/search", {"q": "cat", "k": 0}, None, 422, "k is out of range"),
    ("GET", "/search", {"q": "cat", "k": 101}, None, 422, "k is out of range"),
    ("GET", "/search", {"q": "cat", "k": "ten"}, None, 422, "k: Input should be a valid integer"),
    ("GET", "/search", {"q": "cat", "k": "2.5"}, None, 422, "k: Input should be a valid integer"),
    ("GET", "/search", {"q": "cat", "offset": -1}, None, 422, "offset is out of range"),
    ("GET", "/search", {"q": "cat", "offset": 901}, None, 422, "offset is out of range"),
    ("GET", "/search", {"q": "cat", "group_by": "clip"}, None, 422, "group_by: Input should be 'video'"),
    ("GET", "/search", {"q": "cat", "min_score": 1.5}, None, 422, "min_score is out of range"),
    ("GET", "/search", {"q": "cat", "min_score": "nan"}, None, 422, "min_score"),
    ("GET", "/search", {"q": "cat", "nprobe": 0}, None, 422, "nprobe is out of range"),
    ("GET", "/search", {}, None, 422, "give q (words to look for) or like (a clip id)"),
    ("GET", "/search", {"q": "cat", "like": 1}, None, 422, "give q (words to look for) or like (a clip id)"),
    ("GET", "/search", {"like": 987654}, None, 404, "like=987654: no indexed clip with that id"),
    ("GET", "/search", {"like": 0}, None, 422, "like is out of range"),
    ("GET", "/search", {"q": "cat", "exclude_video": "true"}, None, 422, "exclude_video: only with like"),
    ("GET", "/search", {"q": "cat", "filter": "duration >= 60 AND"}, None, 422, "cannot read it at the end"),
    ("GET", "/search", {"q": "cat", "filter": "width = 1 height = 2"}, None, 422, "at character 11 ('height = 2')"),
    ("GET", "/search", {"q": "cat", "filter": "colour = red"}, None, 422, "unknown field 'colour'"),
    ("GET", "/search", {"q": "cat", "filter": "codec > 5"}, None, 422, "codec is text"),
    ("GET", "/search", {"q": "cat", "filter": "indexed_at >= yesterday"}, None, 422, "indexed_at is a date"),
    ("GET", "/search", {"q": "cat", "filter": "meta.tags:"}, None, 422, "expected a value"),
    ("GET", "/search", {"q": "cat", "collection": "default,no-such"}, None, 422, "no collection named no-such"),
    ("GET", "/search", {"q": "cat", "collection": "UPPER"}, None, 422, "'UPPER' is not a collection name"),
    ("POST", "/search", {}, b'{"q": "cat", ', 422, "the request body is not valid JSON"),
    ("POST", "/search", {}, b"", 422, "request body is required"),
    ("POST", "/search", {}, b"[1, 2]", 422, "request body"),
    ("POST", "/search", {}, {"k": 3}, 422, "give q (words, or a list of them) or like (a clip id)"),
    ("POST", "/search", {}, {"q": "cat", "like": 1}, 422, "give q (words, or a list of them) or like"),
    ("POST", "/search", {}, {"q": "cat", "filter": "duration >"}, 422, "filter: cannot read it at the end"),
    (
        "POST",
        "/search",
        {},
        {"q": "cat", "filter": {"field": "size", "op": "<", "value": "big"}},
        422,
        "size is a number",
    ),
    (
        "POST",
        "/search",
        {},
        {"q": "cat", "filter": {"field": "nope", "op": "=", "value": 1}},
        422,
        "unknown field 'nope'",
    ),
    ("POST", "/search", {}, {"q": "cat", "filter": {"and": []}}, 422, "request body: filter"),
    ("POST", "/search", {}, {"q": "cat", "collection": ["Bad Name"]}, 422, "'Bad Name' is not a collection name"),
    ("POST", "/search", {}, {"q": "cat", "dedupe_threshold": 2}, 422, "dedupe_threshold is out of range"),
    ("POST", "/search", {}, {"q": ""}, 422, "request body: q"),
    ("POST", "/search", {}, {"q": []}, 422, "request body: q"),
    ("POST", "/search", {}, {"q": ["ok", " "]}, 422, "request body: q"),
    ("POST", "/search", {}, {"q": ["cat"] * 33}, 422, "request body: q"),
    ("POST", "/search", {}, {"q": LONG}, 422, "too long"),
    ("POST", "/search", {}, {"q": "cat", "k": "10"}, 422, "request body: k"),
    ("POST", "/search", {}, {"q": "cat", "k": 1000}, 422, "request body: k is out of range"),
    ("POST", "/search", {}, {"q": "cat", "offset": -3}, 422, "request body: offset is out of range"),
    ("POST", "/search", {}, {"q": "cat", "limit": 3}, 422, "request body: limit: Extra inputs are not permitted"),
    ("POST", "/search", {}, {"q": 42}, 422, "request body: q"),
    ("GET", "/videos/abc", {}, None, 422, "video_id: Input should be a valid integer"),
    ("GET", "/videos/1.5", {}, None, 422, "video_id: Input should be a valid integer"),
    ("GET", "/videos/0", {}, None, 422, "video_id is out of range"),
    ("GET", "/videos/-4", {}, None, 422, "video_id is out of range"),
    ("GET", "/videos/99999999999999999999999", {}, None, 422, "video_id is out of range"),
    ("GET", "/videos/987654", {}, None, 404, "no video with id 987654"),
    ("GET", "/videos/987654/media", {}, None, 404, "no video with id 987654"),
    ("GET", "/videos/abc/media", {}, None, 422, "video_id"),
    ("GET", "/clips/987654/thumbnail", {}, None, 404, "no clip with id 987654"),
    ("GET", "/clips/x1/thumbnail", {}, None, 422, "clip_id"),
    ("GET", "/videos", {"limit": 0}, None, 422, "limit is out of range"),
    ("GET", "/videos", {"limit": 201}, None, 422, "limit is out of range"),
    ("GET", "/videos", {"offset": -1}, None, 422, "offset is out of range"),
    ("GET", "/videos", {"status": "lost"}, None, 422, "status"),
    ("GET", "/no/such/route", {}, None, 404, "no such route"),
    ("PUT", "/search", {}, None, 405, "method PUT not allowed here: use GET or POST"),
    ("DELETE", "/videos/abc", {}, None, 401, "X-API-Key"),  # the key is checked first
]


@pytest.mark.parametrize(
    ("method", "path", "params", "body", "status", "words"),
    BAD_REQUESTS,
    ids=[f"{m} {p} {q or ''}{str(b)[:30] if b is not None else ''}" for m, p, q, b, *_ in BAD_REQUESTS],
)
def test_bad_request_gets_a_4xx_that_says_why(client, method, path, params, body, status, words) -> None:
    if isinstance(body, bytes):
        response = client.request(
            method, path, params=params, content=body, headers={"Content-Type": "application/json"}
        )
    else:
        response = client.request(method, path, params=params, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    message = answer.get("message") or answer["detail"]
    assert isinstance(message, str) and words in message, message


def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """A GET with the request target sent byte for byte (clients would normalise ``..`` away)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


TRAVERSALS = [
    "/static/../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/../app.py",
    "/static/..%2fapp.py",
    "/static/../../indexer/settings.py",
    "/videos/..%2f..%2f..%2fetc%2fpasswd/media",
    "/videos/1/../../../etc/passwd",
    "/videos/%2e%2e/media",
    "/clips/..%2f..%2fetc%2fpasswd/thumbnail",
    "/clips/1/thumbnail/../../../../etc/passwd",
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_no_path_reaches_a_file_outside_the_catalog_or_static_files(live_server, target) -> None:
    status, data = raw_get(live_server.url, target)
    assert 400 <= status < 500, data[:300]
    assert b"root:" not in data and b"import " not in data and b"BaseSettings" not in data


def test_static_files_are_served_and_the_page_uses_nothing_from_outside(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="q"' in page.text and "/static/app.js" in page.text
    for name in ("app.js", "style.css"):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200 and len(asset.content) > 100
        assert "http://" not in asset.text and "https://" not in asset.text  # no CDN: works offline
    assert "http://" not in page.text and "https://" not in page.text
    assert client.get("/static/nothing.js").status_code == 404


def test_openapi_and_docs_are_served(client) -> None:
    schema = client.get("/openapi.json").json()
    assert {
        "/search",
        "/videos",
        "/videos/{video_id}",
        "/videos/{video_id}/media",
        "/clips/{clip_id}/thumbnail",
    } <= set(schema["paths"])
    assert {"/healthz", "/readyz", "/metrics", "/admin/reload"} <= set(schema["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text
    assert "cdn" not in docs.text.lower()  # offline: every asset comes from the app itself
    bundle = client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and "javascript" in bundle.headers["content-type"] and len(bundle.content) > 1e5
    assert client.get("/docs/assets/../../../etc/passwd").status_code == 404


def test_no_client_input_causes_a_server_error(client) -> None:
    """Odd but well-formed input: control characters, other scripts, huge numbers, a repeated parameter."""
    odd = ["\x00", "💥" * 300, "%00", "\u202e evil", "<script>alert(1)</script>", "a" * 1000, "q=1&k=2", "\ud7ff"]
    for text in odd:
        response = client.get("/search", params={"q": text, "k": 100})
        assert response.status_code == 200, (text, response.text)
    assert client.get("/search?q=cat&k=5&k=7").status_code == 200
    assert client.get("/search?q=cat&min_score=-1e309").status_code == 422
    assert client.get("/videos?offset=9223372036854775807").status_code == 200
    status = client.get("/videos?offset=9223372036854775808").status_code
    assert status == 422
    assert client.post("/search", content=b"\xff\xfe", headers={"Content-Type": "application/json"}).status_code == 422
    assert client.post("/search", content=b'{"q": "cat"}', headers={"Content-Type": "text/plain"}).status_code < 500
