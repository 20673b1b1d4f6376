"""The report page in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by .ci/run) driven by selenium. Every figure decodes and
is visible, every table renders with its rows, and the page logs no console error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.registry import Registry
from pipeline.report import write_report
from pipeline.reproduce import reproduce, save
from pipeline.store import MeasurementStore

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    registry = Registry(root / "models")
    save(reproduce(registry, seeds=1, epochs=1, dataset="digits"), registry)
    return write_report(MeasurementStore(root / "store"), registry, "garg2025", root / "out")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    assert CHROMIUM and DRIVER, ("headless Chromium is needed: apt-get install chromium "
                                 "chromium-driver (.ci/run installs it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    yield driver
    driver.quit()


@pytest.mark.slow
def test_report_page_in_headless_chromium(report, browser):
    browser.get(report.html.as_uri())
    assert browser.title == "ferroflow report garg2025"
    images = browser.find_elements("css selector", "figure img")
    assert sorted(i.get_attribute("alt") for i in images) == sorted(report.figures)
    # decode() rejects for an image the browser cannot decode; naturalWidth is then 0
    decoded = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all([...document.images].map(i => i.decode().then(() => [i.alt, i.naturalWidth,"
        " i.naturalHeight], e => [i.alt, 0, String(e)]))).then(done);")
    for alt, width, height in decoded:
        assert width > 300 and height > 200, f"figure {alt} did not decode: {height}"
    for img in images:
        browser.execute_script("arguments[0].scrollIntoView();", img)
        box = img.rect
        assert img.is_displayed() and box["width"] > 300 and box["height"] > 150, img.get_attribute("alt")
    tables = browser.find_elements("css selector", "table.t")
    assert len(tables) == len(report.tables)
    for table, (name, df) in zip(tables, report.tables.items()):
        headers = [th.text for th in table.find_elements("css selector", "thead th")]
        assert headers == list(df.columns), name
        rows = table.find_elements("css selector", "tbody tr")
        assert len(rows) == len(df) and all(r.is_displayed() for r in rows), name
        assert table.size["height"] > 20 * len(df), name
    verdicts = browser.find_elements("css selector", "#reproduction-garg2025 + p + ol li")
    assert len(verdicts) == 3 and all(v.is_displayed() for v in verdicts)
    link = browser.find_element("link text", "verdicts.md").get_attribute("href")
    assert link == (Path(report.reproductions[0]["folder"]) / "verdicts.md").as_uri()
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
