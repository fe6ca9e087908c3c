"""The search page in a real headless Chromium (Selenium + Debian's chromium and chromium-driver).

.ci/run installs chromium and chromium-driver when they are missing; the test is skipped, with the
reason, only where no browser could be installed.
"""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from serve_helpers import free_port, make_service, wait_healthy

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                       reason="no Chromium/chromedriver on this machine (apt-get install chromium chromium-driver)"),
]


@pytest.fixture
def live_server(index_dir, tiny_model):
    import uvicorn

    from embedkit.serve.app import create_app

    svc = make_service(index_dir, tiny_model)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(svc), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, timeout=30)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
        svc.close()


def _driver(javascript: bool = True):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--window-size=1200,900"):
        opts.add_argument(arg)
    if not javascript:
        opts.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    try:
        return webdriver.Chrome(options=opts, service=Service(DRIVER))
    except Exception as e:  # noqa: BLE001 - a browser that cannot start here is a skip, with the reason
        pytest.skip(f"Chromium could not start: {str(e).splitlines()[0][:200]}")


def _wait(cond, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_type_a_query_press_enter_see_highlighted_results(live_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = _driver()
    try:
        d.get(live_server + "/")
        assert d.title == "embedkit search"
        box = d.find_element(By.ID, "q")
        assert d.switch_to.active_element == box  # autofocus: type at once
        box.send_keys("the cat and the kitten sleep" + Keys.ENTER)
        results = _wait(lambda: d.find_elements(By.CSS_SELECTOR, "li.result"))
        assert "/?q=the%20cat%20and%20the%20kitten%20sleep" in d.current_url  # linkable, without a reload
        first = results[0]
        assert first.find_element(By.CSS_SELECTOR, ".doc-id").text == "cat"
        assert first.find_element(By.CSS_SELECTOR, "h2.title").text == "the cat and the kitten sleep"
        marks = [m.text for m in first.find_elements(By.CSS_SELECTOR, "p.text mark")]
        assert marks == ["cat", "kitten", "sleep"]  # no stopwords
        assert "kind" in first.find_element(By.CSS_SELECTOR, "dl.meta").text
        status = d.find_element(By.ID, "status").text
        assert "results in" in status and "ms" in status
        # keyboard: "/" from anywhere goes back to the query box
        d.find_element(By.TAG_NAME, "body").send_keys("/")
        assert d.switch_to.active_element == d.find_element(By.ID, "q")
        # the URL reproduces the results (server-rendered page)
        d.get(d.current_url)
        ids = [a.text for a in d.find_elements(By.CSS_SELECTOR, "li.result .doc-id")]
        assert ids[0] == "cat" and len(ids) == 10
    finally:
        d.quit()


def test_page_works_without_javascript(live_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = _driver(javascript=False)
    try:
        d.get(live_server + "/")
        d.find_element(By.ID, "q").send_keys("python code with a loop" + Keys.ENTER)  # a plain GET form submission
        _wait(lambda: "q=python+code+with+a+loop" in d.current_url)
        first = _wait(lambda: d.find_elements(By.CSS_SELECTOR, "li.result"))[0]
        assert first.find_element(By.CSS_SELECTOR, ".doc-id").text == "python"
        assert [m.text for m in first.find_elements(By.CSS_SELECTOR, "p.text mark")] == ["python", "code", "loop"]
    finally:
        d.quit()


LONG_TEXT = ("A story of a cat " + "the market was slow and the stock price fell. " * 30
             + "Then the cat and the kitten sleep on the bank. " + "the market was slow and the stock price fell. " * 30)


def test_snippet_fits_the_screen_and_the_hit_opens_a_readable_document(live_server):
    """Issue 28: a long document shows a short snippet (one hit no longer fills the screen), its title
    once, and clicking it opens a readable page, not raw JSON."""
    import json
    import urllib.request

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from serve_helpers import AUTH

    from embedkit.serve.page import SNIPPET_CHARS

    body = json.dumps({"documents": [{"id": "long", "text": LONG_TEXT,
                                      "metadata": {"title": "A story of a cat", "year": 2020}}]}).encode()
    req = urllib.request.Request(live_server + "/api/documents", data=body, method="POST",
                                 headers={**AUTH, "Content-Type": "application/json"})
    assert urllib.request.urlopen(req, timeout=10).status == 201
    d = _driver()
    try:
        d.get(live_server + "/")
        d.find_element(By.ID, "q").send_keys("kitten sleep on the bank" + Keys.ENTER)
        _wait(lambda: d.find_elements(By.CSS_SELECTOR, "li.result"))
        d.find_element(By.ID, "k").clear()
        d.find_element(By.ID, "k").send_keys("20" + Keys.ENTER)
        _wait(lambda: len(d.find_elements(By.CSS_SELECTOR, "li.result")) == 13)  # all 13 documents, k=20 rendered
        hit = [li for li in d.find_elements(By.CSS_SELECTOR, "li.result")
               if li.find_element(By.CSS_SELECTOR, ".doc-id").text == "long"][0]
        snippet = hit.find_element(By.CSS_SELECTOR, "p.text").text
        assert len(snippet) <= SNIPPET_CHARS + 4 and "kitten sleep" in snippet
        assert hit.find_element(By.CSS_SELECTOR, "h2.title").text == "A story of a cat"
        assert hit.size["height"] < 250  # a few lines, not the whole 2,800-character text
        hit.find_element(By.CSS_SELECTOR, "h2.title a").click()
        _wait(lambda: "/doc/long" in d.current_url)
        assert d.find_element(By.CSS_SELECTOR, "h1.doc-title").text == "A story of a cat"
        text = d.find_element(By.CSS_SELECTOR, ".doc-text").text
        assert "Then the cat and the kitten sleep on the bank." in text and len(text) > 2500
        assert [m.text for m in d.find_elements(By.CSS_SELECTOR, ".doc-text mark")] == ["kitten", "sleep", "bank"]
        assert "year" in d.find_element(By.CSS_SELECTOR, "dl.meta").text
        assert "{" not in d.find_element(By.TAG_NAME, "body").text  # not raw JSON
        d.find_element(By.ID, "back").click()
        _wait(lambda: d.find_elements(By.CSS_SELECTOR, "li.result"))
        assert d.find_element(By.ID, "q").get_attribute("value") == "kitten sleep on the bank"
    finally:
        d.quit()


def test_api_docs_page_renders_offline(live_server):
    from selenium.webdriver.common.by import By

    d = _driver()
    try:
        d.get(live_server + "/docs")
        methods = [e.text for e in d.find_elements(By.CSS_SELECTOR, ".endpoint h2")]
        assert "GET /api/search" in methods and any(m.startswith("POST /api/documents") for m in methods)
    finally:
        d.quit()
