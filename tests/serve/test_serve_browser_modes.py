"""The page's mode and filter controls in a real headless Chromium (issue 29), with JavaScript on."""

from __future__ import annotations

import json
from urllib.parse import unquote

from test_serve_browser import _driver, _wait, live_server, pytestmark  # noqa: F401 - fixture and skip marks


def test_choose_a_mode_type_a_filter_and_see_a_bad_filters_error(live_server):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    d = _driver()
    try:
        d.get(live_server + "/")
        Select(d.find_element(By.ID, "mode")).select_by_value("keyword")
        d.find_element(By.ID, "where").send_keys(json.dumps({"kind": "pet"}))
        d.find_element(By.ID, "q").send_keys("kitten puppy" + Keys.ENTER)
        _wait(lambda: "mode=keyword" in d.current_url)
        assert json.loads(unquote(d.current_url.split("where=", 1)[1])) == {"kind": "pet"}
        ids = _wait(lambda: [e.text for e in d.find_elements(By.CSS_SELECTOR, "li.result .doc-id")])
        assert set(ids) == {"cat", "dog"}  # keyword matches, only pets
        box = d.find_element(By.ID, "where")
        box.clear()
        box.send_keys('{"legs": "four"}' + Keys.ENTER)
        err = _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#hits p.error"))[0]
        assert err.text == "where: field 'legs' holds number values; $eq got the string \"four\""
        assert not d.find_elements(By.CSS_SELECTOR, "li.result")
        d.back()  # history: the good filter's results again, controls restored
        _wait(lambda: d.find_elements(By.CSS_SELECTOR, "li.result"))
        assert d.find_element(By.ID, "where").get_attribute("value") == json.dumps({"kind": "pet"})
        assert Select(d.find_element(By.ID, "mode")).first_selected_option.get_attribute("value") == "keyword"
    finally:
        d.quit()
