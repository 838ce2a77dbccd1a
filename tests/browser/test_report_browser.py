"""The HTML report as a person uses it: opened from disk in a real headless Chromium, slider moved, table sorted.

Debian's ``chromium`` and ``chromium-driver`` packages (scripts/setup.sh installs them) driven by
selenium. The report is that of the synthetic site of tests/rtsmonitor/test_htmlreport.py (seeded,
no model): years 2018-2023 with a no-scene, a broken and a failed year. The test checks that the page
logs no console error and loads nothing but ``data:``/``file:`` URLs, that the map draws exactly the
slumps of the selected year, that moving the slider (by script and by keyboard) redraws them, and
that clicking a table header sorts the table; it keeps screenshots of the page and of the map in
``$RTS_TEST_ARTIFACTS`` (default tests/artifacts/).

Without Chromium the test is skipped, unless ``RTS_REQUIRE_BROWSER`` is set (CI sets it): then it fails.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from rtsmonitor.htmlreport import STATUS_COLOURS, write_site_report

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("RTS_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("RTS_CHROMEDRIVER", "/usr/bin/chromedriver"))
ARTIFACTS = Path(os.environ.get("RTS_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # runs as root in CI containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # otherwise Chromium calls Google's services on start
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)
WAIT_S = 15.0


def _missing() -> str | None:
    """What the test needs and this machine lacks, or ``None``."""
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (path.is_file() and os.access(path, os.X_OK)):
            return f"{path} not found (Debian package {package}: run scripts/setup.sh)"
    return None


def _synthetic_site() -> ModuleType:
    """tests/rtsmonitor/test_htmlreport.py, whose seeded site-series this test opens in the browser."""
    path = ROOT / "tests" / "rtsmonitor" / "test_htmlreport.py"
    spec = importlib.util.spec_from_file_location("htmlreport_synthetic_site", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing:
        if os.environ.get("RTS_REQUIRE_BROWSER"):
            pytest.fail(f"RTS_REQUIRE_BROWSER is set but {missing}", pytrace=False)
        pytest.skip(f"no headless browser: {missing}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="rts-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The report file of the synthetic site, and the module that built the site (for its truth)."""
    root = tmp_path_factory.mktemp("browser-report")
    site_module = _synthetic_site()
    site = site_module.build_site(root)
    path = root / "report.html"
    write_site_report(site.storage, site_module.SITE, path)
    return path, site


def wait_for(condition: Any, what: str) -> Any:
    """Poll ``condition()`` until it is truthy (then return it) or :data:`WAIT_S` pass."""
    deadline = time.monotonic() + WAIT_S
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")
        time.sleep(0.05)


def drawn(driver: Any) -> tuple[str | None, set[str]]:
    """The year the map shows and the slump ids of the outlines it draws (SVG paths)."""
    year = driver.find_element("id", "map").get_attribute("data-year")
    paths = driver.find_elements("css selector", "#map .leaflet-overlay-pane path.rts-slump")
    return year, {p.get_attribute("data-slump-id") for p in paths}


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser requested since the last call (Chrome's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def open_report(driver: Any, path: Path) -> None:
    driver.get("about:blank")
    driver.get_log("browser")  # drop what came before
    driver.get_log("performance")
    driver.get(path.as_uri())
    wait_for(lambda: driver.find_element("tag name", "body").get_attribute("data-ready") == "true", "the page's script")


def test_map_draws_the_selected_years_slumps_and_the_slider_changes_them(
    browser: Any, report: tuple[Path, Any]
) -> None:
    from selenium.webdriver.common.keys import Keys

    path, site = report
    started = time.perf_counter()
    open_report(browser, path)
    slider = browser.find_element("id", "year-slider")
    label = browser.find_element("id", "year-label")
    note = browser.find_element("id", "year-note")

    # opens on the last readable year, 2022: s0001 (active) and s0002 (stable); s0003 vanished
    assert drawn(browser) == ("2022", site.present[2022])
    assert browser.find_element("id", "map").get_attribute("data-slumps") == "2"
    assert label.text == "2022: 2 slumps"
    image = browser.find_element("css selector", "#map img.rts-quicklook")
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    active = browser.find_element("css selector", "#map path.rts-slump[data-slump-id='s0001']")
    assert "rts-status-active" in active.get_attribute("class")
    assert active.get_attribute("stroke") == STATUS_COLOURS["active"]
    row = browser.find_element("css selector", "#slumps-table tr[data-slump-id='s0003'] td.year-status")
    assert row.text == "vanished"

    # the slider, set as a script would (value + input event): 2019 has three slumps
    browser.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));", slider, "1"
    )
    assert wait_for(lambda: drawn(browser)[0] == "2019", "2019 on the map")
    assert drawn(browser) == ("2019", site.present[2019])
    new = browser.find_element("css selector", "#map path.rts-slump[data-slump-id='s0003']")
    assert "rts-status-new" in new.get_attribute("class") and label.text == "2019: 3 slumps"
    assert "selected" in browser.find_element("css selector", "#records-table tr[data-year='2019']").get_attribute(
        "class"
    )

    # and with the keyboard, as a person would: 2020 had no scene, 2021 is broken; neither draws slumps
    slider.send_keys(Keys.ARROW_RIGHT)
    assert wait_for(lambda: drawn(browser)[0] == "2020", "2020 on the map")
    assert drawn(browser)[1] == set() and "No map for 2020 (no-scene): no summer scene" in note.text
    assert "</script><script>alert(1)</script>" in note.text  # a reason from storage, shown as plain text
    assert not browser.find_elements("css selector", "#map img.rts-quicklook")
    slider.send_keys(Keys.ARROW_RIGHT)
    assert wait_for(lambda: drawn(browser)[0] == "2021", "2021 on the map")
    assert drawn(browser)[1] == set() and label.text == "2021: 0 slumps (broken)"
    assert "2021 is broken: rts.geojson is not valid JSON" in note.text
    assert browser.find_element("id", "map").get_attribute("data-broken") == "true"
    slider.send_keys(Keys.ARROW_RIGHT)
    assert wait_for(lambda: drawn(browser) == ("2022", site.present[2022]), "2022 again")

    assert console_errors(browser) == []
    urls = requested_urls(browser)
    assert urls and all(url.split(":", 1)[0] in ("file", "data") for url in urls), urls
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(url.split(":", 1)[0] in ("file", "data") for url in resources), resources

    # what a person sees: screenshots kept for the CI artifacts
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    map_element = browser.find_element("id", "map")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", map_element)
    page_shot, map_shot = ARTIFACTS / "report_browser_page.png", ARTIFACTS / "report_browser_map.png"
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    whole = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": whole})
    page_shot.write_bytes(base64.b64decode(shot["data"]))  # the whole page, not only the window
    assert map_element.screenshot(str(map_shot))
    pixels = np.asarray(Image.open(io.BytesIO(map_shot.read_bytes())).convert("RGB")).astype(int)
    assert page_shot.stat().st_size > 20_000 and pixels.std() > 10  # not blank
    for status in ("active", "stable"):  # the outlines are visible in their colours
        colour = np.array([int(STATUS_COLOURS[status][i : i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels - colour).sum(axis=2) < 40).sum() > 20, status
    assert time.perf_counter() - started < 60


def test_clicking_a_header_sorts_the_table(browser: Any, report: tuple[Path, Any]) -> None:
    path, _ = report
    open_report(browser, path)

    def column(table: str, index: int) -> list[str]:
        cells = browser.find_elements("css selector", f"#{table}-table tbody tr td:nth-child({index})")
        return [c.text for c in cells]

    assert column("slumps", 1) == ["s0001", "s0002", "s0003"]
    area = browser.find_element("xpath", "//table[@id='slumps-table']//th[starts-with(., 'Area')]")
    area.click()
    assert area.get_attribute("aria-sort") == "ascending"
    assert column("slumps", 1) == ["s0003", "s0002", "s0001"]  # 6,400, 10,000, 40,000 m²
    area.click()
    assert area.get_attribute("aria-sort") == "descending"
    assert column("slumps", 1) == ["s0001", "s0002", "s0003"]
    growth = browser.find_element("xpath", "//table[@id='slumps-table']//th[starts-with(., 'Growth')]")
    growth.click()  # s0003 vanished: no growth, sorted last
    assert column("slumps", 1) == ["s0002", "s0001", "s0003"]

    year = browser.find_element("xpath", "//table[@id='records-table']//th[.='Year']")
    year.click()
    year.click()
    assert column("records", 1) == ["2023", "2022", "2021", "2020", "2019", "2018"]
    status = browser.find_element("xpath", "//table[@id='records-table']//th[.='Status']")
    status.click()
    assert column("records", 2) == ["broken", "failed", "no-scene", "ok", "ok", "ok"]
    assert console_errors(browser) == []
