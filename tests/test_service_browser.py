"""The web page in a real headless Chromium (Debian's, driven by Selenium): search, see thumbnails, play."""

from __future__ import annotations

import math
import os
import shutil
import time

import pytest

pytest_plugins = ["service_fixtures"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    if not (CHROMIUM and CHROMEDRIVER):
        message = "Chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio"):
        options.add_argument(flag)
    options.add_argument("--autoplay-policy=no-user-gesture-required")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # no driver download
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_type_a_query_see_thumbnails_and_play_from_the_clip_start(browser, live_server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(live_server.url + "/")
    box = browser.find_element(By.ID, "q")
    box.send_keys("a red circle moves to the right", Keys.ENTER)
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) >= 10)
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .result")
    wait.until(  # every thumbnail really loaded and decoded
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#results .result img')].slice(0, 10)"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
    )
    first = cards[0]
    assert first.find_element(By.CSS_SELECTOR, ".title").text.startswith("a ")
    assert "–" in first.find_element(By.CSS_SELECTOR, ".range").text
    float(first.find_element(By.CSS_SELECTOR, ".score").text)
    assert "results" in browser.find_element(By.ID, "status").text

    late = next(c for c in cards if float(c.get_attribute("data-start")) > 0)  # a clip that starts mid-video
    start = float(late.get_attribute("data-start"))
    browser.execute_script("arguments[0].scrollIntoView()", late)
    wait.until(ready.element_to_be_clickable(late))
    late.click()
    video = browser.find_element(By.ID, "video")
    assert video.is_displayed()
    deadline = time.monotonic() + 20
    state = {}
    while time.monotonic() < deadline:
        state = browser.execute_script(
            "const v = document.getElementById('video');"
            "return {t: v.currentTime, paused: v.paused, ready: v.readyState, src: v.currentSrc,"
            "        error: v.error && v.error.code}"
        )
        if state["ready"] >= 2 and state["t"] >= start - 0.05 and (not state["paused"] or state["t"] > start):
            break
        time.sleep(0.1)
    assert state["error"] is None, state
    assert state["src"].endswith(late.get_attribute("data-media").split("/videos/", 1)[1]), state
    assert state["t"] >= start - 0.05 and state["ready"] >= 2, state
    assert not state["paused"] or state["t"] > start, state  # playing, or played on from the start
    assert "playing" in late.get_attribute("class")


def test_api_reference_renders_from_local_files_only(browser, live_server) -> None:
    """/docs works offline: Swagger UI comes from the app itself and lists the API's routes."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(live_server.url + "/docs")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 5)
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/search", "/videos/{video_id}/media", "/readyz"} <= {p.replace("\u200b", "") for p in paths}
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(live_server.url) for url in loaded), loaded


def test_a_server_with_a_read_key_asks_for_it_once_and_then_streams(browser, service_corpus, start_server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    key = "browser-read-key-0123456789"
    server = start_server(service_corpus.settings(read_api_key=key))
    browser.delete_all_cookies()
    browser.get(server.url + "/")
    browser.find_element(By.ID, "q").send_keys("a red circle moves to the right", Keys.ENTER)
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: d.find_element(By.ID, "key-form").is_displayed())
    assert "read key" in browser.find_element(By.ID, "status").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#results .result")
    browser.find_element(By.ID, "key").send_keys(key, Keys.ENTER)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) >= 5)
    wait.until(  # thumbnails come with the cookie the page set
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#results .result img')].slice(0, 5)"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
    )
    browser.find_elements(By.CSS_SELECTOR, "#results .result")[0].click()
    wait.until(lambda d: d.execute_script("return document.getElementById('video').readyState >= 1"))
    assert browser.execute_script("return document.getElementById('video').error") is None
    assert not browser.find_element(By.ID, "key-form").is_displayed()


# ---- issue 14: filters, collections, an image dropped / pasted / picked, "more like this", the URL's state

QUERY = "a red circle moves to the right"
OTHER = "a blue square moves up"
STATE_KEYS = {"q", "filter", "collection", "like", "group_by"}


def mark_results(browser) -> None:  # type: ignore[no-untyped-def]
    """Mark the cards shown, so that ``fresh_results`` waits for the next answer's."""
    browser.execute_script("document.querySelectorAll('#results .result').forEach(c => c.dataset.old = '1')")


def fresh_results(browser) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    """(clip id, video id) of the cards of a new answer, once it is shown."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script(
            "const cards = [...document.querySelectorAll('#results .result')];"
            "return cards.length > 0 && !cards.some(c => c.dataset.old)"
            "  && !document.getElementById('status').textContent.startsWith('Searching')"
        )
    )
    return [
        (int(clip), int(video))
        for clip, video in browser.execute_script(
            "return [...document.querySelectorAll('#results .result')].map(c => [c.dataset.clip, c.dataset.video])"
        )
    ]


def page_state(browser) -> dict[str, str]:  # type: ignore[no-untyped-def]
    from urllib.parse import parse_qsl, urlsplit

    return dict(parse_qsl(urlsplit(browser.current_url).query))


def form_values(browser) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    return tuple(
        browser.execute_script("return [document.getElementById('q').value, document.getElementById('filter').value]")
    )


def submit(browser, q: str | None = None, filter: str | None = None) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]  # noqa: A002
    """Set the words and / or the filter, press Search, and return the new answer's cards."""
    from selenium.webdriver.common.by import By

    mark_results(browser)
    for field, value in (("q", q), ("filter", filter)):
        if value is not None:
            box = browser.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
    browser.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
    return fresh_results(browser)


def api_clips(client, **params: str) -> list[int]:  # type: ignore[no-untyped-def]
    response = client.get("/search", params={"k": "24", **params})
    assert response.status_code == 200, response.text
    return [hit["clip_id"] for hit in response.json()["results"]]


def test_a_filter_narrows_the_results_and_a_bad_one_shows_the_servers_message(browser, live_server, client) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(live_server.url + "/")
    everything = submit(browser, q=QUERY)
    assert len({video for _, video in everything}) > 1
    wanted = everything[1][1]  # the video of the second result
    narrowed = submit(browser, filter=f"video_id = {wanted}")
    assert {video for _, video in narrowed} == {wanted} and len(narrowed) < len(everything)
    assert [clip for clip, _ in narrowed] == api_clips(client, q=QUERY, filter=f"video_id = {wanted}")
    assert page_state(browser) == {"q": QUERY, "filter": f"video_id = {wanted}"}
    longer = submit(browser, filter="duration > 0")
    assert len(longer) == len(everything)

    bad = "nosuchfield >= 3 AND"
    expected = client.get("/search", params={"q": QUERY, "filter": bad})
    assert expected.status_code == 422 and expected.json()["message"]
    browser.find_element(By.ID, "filter").clear()
    browser.find_element(By.ID, "filter").send_keys(bad)
    browser.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
    error = browser.find_element(By.ID, "filter-error")
    WebDriverWait(browser, 20).until(lambda _: error.is_displayed())
    assert error.text == expected.json()["message"]
    assert browser.find_element(By.ID, "filter").get_attribute("aria-invalid") == "true"
    assert not browser.find_elements(By.CSS_SELECTOR, "#results .result")
    browser.find_element(By.ID, "filter").send_keys(" ")  # editing the filter clears the message
    assert not error.is_displayed()


def test_more_like_this_shows_that_clip_first_and_puts_like_in_the_url(browser, live_server, client) -> None:
    from selenium.webdriver.common.by import By

    browser.get(live_server.url + "/")
    cards = submit(browser, q=QUERY)
    clip = cards[3][0]
    mark_results(browser)
    button = browser.find_element(By.CSS_SELECTOR, f'#results .result[data-clip="{clip}"] .like')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()
    alike = fresh_results(browser)
    assert alike[0][0] == clip
    assert [c for c, _ in alike] == api_clips(client, like=str(clip))
    assert page_state(browser) == {"like": str(clip)}
    assert form_values(browser) == ("", "")
    assert f"clip {clip}" in browser.find_element(By.ID, "like-banner").text
    assert "like this clip" in browser.find_element(By.ID, "status").text

    # a filter typed in applies to the like-search; clearing it goes back to no search
    narrowed = submit(browser, filter=f"video_id = {alike[0][1]}")
    assert narrowed[0][0] == clip and {v for _, v in narrowed} == {alike[0][1]}
    assert page_state(browser) == {"like": str(clip), "filter": f"video_id = {alike[0][1]}"}
    browser.find_element(By.ID, "like-clear").click()
    assert not browser.find_element(By.ID, "like-banner").is_displayed()
    assert "like" not in page_state(browser)


def test_an_image_dropped_pasted_or_picked_searches_and_stays_out_of_the_url(
    browser, live_server, client, tmp_path
) -> None:
    import base64
    import io

    from PIL import Image
    from selenium.webdriver.common.by import By

    first = client.get("/search", params={"q": QUERY, "k": "1"}).json()["results"][0]
    thumbnail = client.get(first["thumbnail_url"])
    assert thumbnail.status_code == 200
    buffer = io.BytesIO()
    Image.open(io.BytesIO(thumbnail.content)).convert("RGB").save(buffer, "PNG")
    png = buffer.getvalue()

    def expected(**fields: str) -> list[int]:
        data = {"k": "24", "offset": "0", "image_weight": "0.5", **fields}
        response = client.post("/search", files={"image": ("frame.png", png, "image/png")}, data=data)
        assert response.status_code == 200, response.text
        assert response.json()["example"] == "image"
        return [hit["clip_id"] for hit in response.json()["results"]]

    give = (
        "const [data, how] = arguments;"
        "const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));"
        "const transfer = new DataTransfer();"
        "transfer.items.add(new File([bytes], 'frame.png', {type: 'image/png'}));"
        "const box = document.getElementById('q');"
        "const init = {dataTransfer: transfer, clipboardData: transfer, bubbles: true, cancelable: true};"
        "if (how === 'drop') { box.dispatchEvent(new DragEvent('dragover', init));"
        "  return !box.dispatchEvent(new DragEvent('drop', init)); }"
        "return !box.dispatchEvent(new ClipboardEvent('paste', init));"
    )
    encoded = base64.b64encode(png).decode()

    browser.get(live_server.url + "/")
    mark_results(browser)
    assert browser.execute_script(give, encoded, "drop")  # the page took the drop
    dropped = fresh_results(browser)
    assert [c for c, _ in dropped] == expected()
    assert "for the image" in browser.find_element(By.ID, "status").text
    assert browser.find_element(By.ID, "example").is_displayed()
    assert browser.execute_script("return document.getElementById('example-img').naturalWidth") > 0
    assert page_state(browser) == {} and "image" not in browser.current_url

    browser.find_element(By.ID, "q").send_keys(OTHER)  # words in the box are mixed in with a pasted image
    mark_results(browser)
    assert browser.execute_script(give, encoded, "paste")
    mixed = fresh_results(browser)
    assert [c for c, _ in mixed] == expected(q=OTHER)
    assert "image and words" in browser.find_element(By.ID, "status").text
    assert page_state(browser) == {"q": OTHER}

    browser.find_element(By.ID, "example-clear").click()  # clearing the image: a search by the words alone
    assert not browser.find_element(By.ID, "example").is_displayed()
    assert [c for c, _ in fresh_results(browser)] == api_clips(client, q=OTHER)

    picked = tmp_path / "frame.png"  # the "Image…" button's file chooser
    picked.write_bytes(png)
    browser.find_element(By.ID, "q").clear()
    mark_results(browser)
    browser.find_element(By.ID, "image-file").send_keys(str(picked))
    assert [c for c, _ in fresh_results(browser)] == expected()
    assert page_state(browser) == {}


def test_back_and_forward_restore_the_searches_and_a_url_runs_its_search(browser, live_server, client) -> None:
    from selenium.webdriver.common.by import By

    browser.get(live_server.url + "/")
    first = submit(browser, q=QUERY)
    video = first[2][1]
    second = submit(browser, q=OTHER, filter=f"video_id = {video}")
    assert second != first
    mark_results(browser)
    browser.find_element(By.CSS_SELECTOR, "#results .result .like").click()
    third = fresh_results(browser)
    assert page_state(browser) == {"like": str(second[0][0]), "filter": f"video_id = {video}"}

    mark_results(browser)
    browser.back()
    assert fresh_results(browser) == second
    assert form_values(browser) == (OTHER, f"video_id = {video}")
    assert page_state(browser) == {"q": OTHER, "filter": f"video_id = {video}"}
    assert not browser.find_element(By.ID, "like-banner").is_displayed()
    mark_results(browser)
    browser.back()
    assert fresh_results(browser) == first
    assert form_values(browser) == (QUERY, "")
    mark_results(browser)
    browser.forward()
    assert fresh_results(browser) == second and form_values(browser) == (OTHER, f"video_id = {video}")
    mark_results(browser)
    browser.forward()
    assert fresh_results(browser) == third and form_values(browser) == ("", f"video_id = {video}")
    assert browser.find_element(By.ID, "like-banner").is_displayed()
    browser.back()
    browser.back()
    browser.back()  # the empty page it started from
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 20).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#results .result"))
    assert form_values(browser) == ("", "")

    # a shared link: loading a URL with a search in it runs that search and fills the form
    from urllib.parse import urlencode

    browser.get(live_server.url + "/?" + urlencode({"q": OTHER, "filter": f"video_id = {video}"}))
    assert fresh_results(browser) == second
    assert form_values(browser) == (OTHER, f"video_id = {video}")
    browser.get(live_server.url + "/?" + urlencode({"like": str(second[0][0]), "filter": f"video_id = {video}"}))
    assert fresh_results(browser) == third
    assert browser.find_element(By.ID, "like-banner").is_displayed()


@pytest.fixture
def two_collections(private_corpus, tiny_encoder):  # type: ignore[no-untyped-def]
    """The corpus with 5 of its 12 videos moved to ``news`` (ingested again there, without re-encoding)."""
    from indexer.pipeline import IngestOptions, ingest
    from indexer.sources import discover

    summary = ingest(
        private_corpus.settings(),
        discover(sorted(private_corpus.titles)[:5], collection="news"),
        IngestOptions(workers=0, progress=False),
        encoder=tiny_encoder,
    )
    assert summary.moved == 5, summary
    return private_corpus


def test_the_collection_selector_lists_the_collections_and_narrows_the_search(
    browser, two_collections, start_server, tiny_encoder
) -> None:
    from urllib.parse import urlencode

    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = start_server(two_collections.settings(), encoder_factory=lambda _: tiny_encoder)
    listed = httpx.get(server.url + "/collections", timeout=30)
    assert listed.status_code == 200, listed.text
    names = [c["name"] for c in listed.json()["collections"]]
    assert names == ["default", "news"]

    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#collection-list input")) == 2)
    assert browser.find_element(By.ID, "collections").is_displayed()
    everything = submit(browser, q=QUERY)
    mark_results(browser)
    browser.find_element(By.CSS_SELECTOR, '#collection-list input[value="news"]').click()  # reruns the search
    news = fresh_results(browser)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert [c for c, _ in news] == api_clips(http, q=QUERY, collection="news")
        assert len({v for _, v in news}) <= 5 < len({v for _, v in everything})
        assert page_state(browser) == {"q": QUERY, "collection": "news"}
        mark_results(browser)
        browser.find_element(By.CSS_SELECTOR, '#collection-list input[value="default"]').click()
        assert fresh_results(browser) == everything  # both ticked: every video, as with none
        assert page_state(browser) == {"q": QUERY, "collection": "default,news"}

    # a link with collections ticks them; a name the server does not know gets its message
    browser.get(server.url + "/?" + urlencode({"q": QUERY, "collection": "news"}))
    assert fresh_results(browser) == news
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '#collection-list input[value="news"]').is_selected())
    assert not browser.find_element(By.CSS_SELECTOR, '#collection-list input[value="default"]').is_selected()
    browser.get(server.url + "/?" + urlencode({"q": QUERY, "collection": "nosuch"}))
    wait.until(lambda d: "nosuch" in d.find_element(By.ID, "status").text)
    assert "Error 422" in browser.find_element(By.ID, "status").text


# ---- issue 15: the demo's example searches


def test_a_demo_page_lists_its_example_searches_and_a_click_runs_one(
    browser, service_corpus, live_server, start_server, tiny_encoder
) -> None:
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from service.demo import example_texts

    examples = example_texts()
    server = start_server(service_corpus.settings(), encoder_factory=lambda _: tiny_encoder, demo_queries=examples)
    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: d.find_element(By.ID, "demo-queries").is_displayed())
    buttons = browser.find_elements(By.CSS_SELECTOR, "#demo-query-list button")
    assert [b.text for b in buttons] == examples

    chosen = examples[-1]  # one with two motions
    mark_results(browser)
    buttons[-1].click()
    shown = fresh_results(browser)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert [c for c, _ in shown] == api_clips(http, q=chosen)  # the search a typed query gets
    assert page_state(browser) == {"q": chosen} and form_values(browser) == (chosen, "")
    assert "results" in browser.find_element(By.ID, "status").text
    mark_results(browser)
    browser.find_element(By.CSS_SELECTOR, "#demo-query-list button").click()  # another: a new history entry
    fresh_results(browser)
    assert page_state(browser) == {"q": examples[0]}
    mark_results(browser)
    browser.back()
    fresh_results(browser)
    assert form_values(browser) == (chosen, "")

    browser.get(live_server.url + "/")  # not a demo: no list, and the page does not ask for one
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
    assert not browser.find_element(By.ID, "demo-queries").is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, "#demo-query-list button")
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert not [url for url in loaded if "/demo/" in url], loaded


def test_each_result_shows_how_sure_the_checkpoint_is_when_it_is_calibrated(
    browser, service_corpus, start_server, live_server, tmp_path
) -> None:
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from model.calibration import ScoreCalibration
    from model.checkpoint import write_calibration

    calibration = ScoreCalibration(slope=40.0, intercept=-2.0, pairs=100, matches=10, top_k=10, fitted_on="test")
    checkpoint = write_calibration(service_corpus.checkpoint, calibration, tmp_path / "calibrated").parent
    server = start_server(service_corpus.settings(checkpoint=str(checkpoint)))
    query = "a red circle moves to the right"
    expected = httpx.get(f"{server.url}/search", params={"q": query, "k": 24}).json()["results"]  # a page
    for url, sure in ((server.url, True), (live_server.url, False)):
        browser.get(url + "/")
        browser.find_element(By.ID, "q").send_keys(query, Keys.ENTER)
        WebDriverWait(browser, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) >= 24)
        shown = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#results .result .confidence")]
        if sure:
            # the page rounds halves up (Math.round), Python's round() to even
            assert shown == [f"{math.floor(hit['confidence'] * 100 + 0.5)}% sure" for hit in expected]
        else:
            assert shown == []  # an uncalibrated checkpoint: the score alone


def test_the_timeline_under_the_player_draws_the_videos_curve_and_a_moment_click_plays_from_it(
    browser, live_server, client
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    query = "a blue square moves up"
    browser.get(live_server.url + "/")
    browser.find_element(By.ID, "q").send_keys(query, Keys.ENTER)
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) >= 10)
    card = browser.find_elements(By.CSS_SELECTOR, "#results .result")[0]
    card.find_element(By.CSS_SELECTOR, "button.play").click()
    video_id = card.get_attribute("data-video")
    body = client.get(f"/videos/{video_id}/moments", params={"q": query}).json()
    wait.until(lambda d: d.find_element(By.ID, "timeline").is_displayed())
    bars = browser.find_elements(By.CSS_SELECTOR, "#timeline .bar")
    moments = browser.find_elements(By.CSS_SELECTOR, "#timeline .moment")
    assert [float(b.get_attribute("data-start")) for b in bars] == [p["start"] for p in body["curve"]]
    assert [float(m.get_attribute("data-start")) for m in moments] == [m["start"] for m in body["moments"]]
    # a click on a bar plays from that clip's start; one on a moment from the moment's start
    at = "return document.getElementById('video').currentTime"
    last = bars[-1]
    start = float(last.get_attribute("data-start"))
    assert start > 0, "the first result's video has several clips"
    browser.execute_script("const v = document.getElementById('video'); v.pause(); v.currentTime = 0")
    browser.execute_script("arguments[0].click()", last)
    wait.until(lambda d: d.execute_script(at) >= start - 0.05)
    best = body["moments"][0]
    away = 0.0 if best["start"] > 0 else body["curve"][-1]["end"] - 0.1
    browser.execute_script(f"const v = document.getElementById('video'); v.pause(); v.currentTime = {away}")
    browser.execute_script("arguments[0].click()", moments[0])
    WebDriverWait(browser, 20, poll_frequency=0.02).until(lambda d: abs(d.execute_script(at) - best["start"]) < 0.5)


def test_a_speech_match_shows_its_subtitle_with_the_words_marked_and_the_mode_goes_in_the_url(
    browser, speech_corpus, start_server
) -> None:
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    server = start_server(speech_corpus.settings())
    query = "volcano eruptions"
    expected = httpx.get(f"{server.url}/search", params={"q": query, "mode": "speech"}).json()["results"]
    browser.get(server.url + "/")
    Select(browser.find_element(By.ID, "mode")).select_by_value("speech")
    browser.find_element(By.ID, "q").send_keys(query, Keys.ENTER)
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: "mode=speech" in d.current_url)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == len(expected))
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .result")
    assert [int(c.get_attribute("data-clip")) for c in cards] == [hit["clip_id"] for hit in expected]
    for card, hit in zip(cards, expected, strict=True):
        snippet = card.find_element(By.CSS_SELECTOR, ".snippet")
        assert snippet.text == hit["snippet"]
        marked = [m.text for m in snippet.find_elements(By.TAG_NAME, "mark")]
        assert marked == [hit["snippet"][a:b] for a, b in hit["highlights"]] and marked
        assert card.find_element(By.CSS_SELECTOR, ".said").text == "said"
    # the default (hybrid, as this library has subtitles) shows every clip, those said with their snippet
    Select(browser.find_element(By.ID, "mode")).select_by_value("")
    wait.until(lambda d: "mode=" not in d.current_url)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) > len(expected))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#results .result .snippet")) == len(expected)
