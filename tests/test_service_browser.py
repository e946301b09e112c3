"""The web page in a real headless Chromium (Debian's, driven by Selenium): search, see thumbnails, play."""

from __future__ import annotations

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
