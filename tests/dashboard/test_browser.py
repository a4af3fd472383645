"""The dashboard in a real headless Chromium at phone width (390 px), while a run is running: charts
side by side on a desktop stack without overlapping, ranked predictions stay in rank order, and a
button that opens another page works while the page refreshes itself. Needs Debian's chromium and
chromium-driver (skipped without them)."""

from __future__ import annotations

import shutil
import sys
import time
from itertools import combinations
from urllib.parse import quote

import pytest
from selenium.webdriver.common.by import By

from foldwise.dashboard import streamlit_command
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from browser import background, chromium, free_port, wait_for_url  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("chromedriver"), reason="needs chromium and chromium-driver"),
]
PHONE = 390


def open_page(browser, port: int, address: str, title: str) -> None:
    browser.get(f"http://127.0.0.1:{port}/?{address}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        titles = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "h1")]
        if title in titles and not browser.find_elements(By.CSS_SELECTOR, "[data-testid='stStatusWidget']"):
            time.sleep(3)  # plotly draws after the script ends
            return
        time.sleep(0.5)
    raise AssertionError(f"{title} did not render")


def boxes(browser, selector: str) -> list[dict]:
    return browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.getBoundingClientRect().toJSON())",
        selector,
    )


def test_phone_width_stacks_charts_keeps_ranked_predictions_in_order_and_opens_runs(
    operator_database, tmp_path
):
    port = free_port()
    env = {"FOLDWISE_DATABASE_URL": operator_database}
    with background(streamlit_command(port), env, tmp_path / "dashboard.log") as server:
        wait_for_url(f"http://127.0.0.1:{port}/_stcore/health", server)
        with chromium(width=PHONE, height=900) as browser:
            browser.set_window_size(PHONE, 900)  # --window-size stops at 500 px; this does not
            assert browser.execute_script("return window.innerWidth") == PHONE
            open_page(browser, port, f"page={quote('Run detail')}&run=2", "Run detail")
            charts = boxes(browser, "[data-testid='stPlotlyChart']")
            assert len(charts) >= 5  # losses, F-beta, per class, precision-recall, threshold, folds
            for chart in charts:
                assert chart["width"] > 0.8 * (PHONE - 40) and chart["right"] <= PHONE
            for first, second in combinations(charts, 2):
                assert first["bottom"] <= second["top"] or second["bottom"] <= first["top"], (first, second)

            open_page(browser, port, "page=Predictions", "Predictions")
            captions = browser.execute_script(
                "return [...document.querySelectorAll('[data-testid=\"stImageCaption\"]')]"
                ".map(e => [e.innerText, e.getBoundingClientRect().top, e.getBoundingClientRect().left])"
            )
            negatives = browser.execute_script(
                "return [...document.querySelectorAll('h3')].find(h => h.innerText.startsWith('False negatives'))"
                ".getBoundingClientRect().top"
            )
            # False positives, as a person reads them (row by row): the most confident first.
            shown = sorted((c for c in captions if c[1] < negatives), key=lambda c: (round(c[1]), c[2]))
            ranked = [float(text.splitlines()[0].rsplit("= ", 1)[1]) for text, *_ in shown]
            assert len(ranked) > 2 and ranked == sorted(ranked, reverse=True), ranked
            assert len({round(left) for *_, left in shown}) == 2  # two a row on a phone

            # While run 7 runs, only the page's fragment reruns on a click: the page must still change.
            open_page(browser, port, "page=Runs", "Runs")
            browser.find_element(By.XPATH, "//button[.//p[normalize-space()='Open run detail']]").click()
            deadline = time.monotonic() + 30
            while "Run detail" not in [h.text for h in browser.find_elements(By.CSS_SELECTOR, "h1")]:
                assert time.monotonic() < deadline, "the Runs page stayed"
                time.sleep(0.5)
