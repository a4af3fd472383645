"""Screenshot every dashboard page in headless Chromium, at desktop and at phone width (390 px):
var/screenshots/dashboard-<page>-<desktop|phone>.png, each the whole page; Run detail twice, on the
newest run (running, when one is) and on the champion (dashboard-run-detail-champion-...).

Starts the dashboard on loopback on the demo database (`make demo` first; `make demo-next` and a
second `foldwise run` give the run comparisons something to show), or on FOLDWISE_DATABASE_URL.
Pages are opened by address (`?page=Run%20detail`), as a phone's collapsed sidebar hides the menu.
Needs: `pip install -e '.[dev]'` and Debian's chromium + chromium-driver.
"""

from __future__ import annotations

import time
from urllib.parse import quote

from browser import ROOT, background, chromium, free_port, wait_for_url
from selenium.webdriver.common.by import By

from foldwise.dashboard import data, streamlit_command
from foldwise.db import registry
from foldwise.db.session import read_scope

OUT = ROOT / "var" / "screenshots"
PAGES = ["Overview", "Runs", "Run detail", "Compare", "Data", "Predictions"]


def shots() -> dict[str, str]:
    """File name part -> address of each screenshot."""
    addresses = {page.lower().replace(" ", "-"): f"page={quote(page)}" for page in PAGES}
    url = data.database_url()
    if not data.may_exist(url):
        return addresses
    with read_scope(url) as session:
        champion = registry.current_champion(session=session)
    if champion is not None:
        addresses["run-detail-champion"] = f"page={quote('Run detail')}&run={champion}"
    return addresses


WIDTHS = {"desktop": 1500, "phone": 390}
VIEWPORT_HEIGHT, MAX_HEIGHT = 900, 14_000
RENDER_TIMEOUT = 60


def wait_for_page(browser) -> None:
    """Until the page has a title and the script has stopped running; then plotly draws."""
    deadline = time.monotonic() + RENDER_TIMEOUT
    while time.monotonic() < deadline:
        titled = browser.find_elements(By.CSS_SELECTOR, "h1")
        running = browser.find_elements(By.CSS_SELECTOR, "[data-testid='stStatusWidget']")
        if titled and not running:
            time.sleep(3)
            return
        time.sleep(0.5)
    raise SystemExit(f"{browser.current_url} did not finish rendering within {RENDER_TIMEOUT}s")


def page_height(browser) -> int:
    """The height of everything the page drew (Streamlit scrolls inside its main section)."""
    return browser.execute_script(
        "const main = document.querySelector('[data-testid=\"stMain\"]');"
        "return Math.max(document.body.scrollHeight, main ? main.scrollHeight : 0);"
    )


def main() -> None:
    port = free_port()
    OUT.mkdir(parents=True, exist_ok=True)
    with background(streamlit_command(port), {}, OUT / "dashboard.log") as server:
        wait_for_url(f"http://127.0.0.1:{port}/_stcore/health", server)
        for device, width in WIDTHS.items():
            with chromium(width=width, height=VIEWPORT_HEIGHT) as browser:
                for name, address in shots().items():
                    browser.set_window_size(width, VIEWPORT_HEIGHT)  # --window-size stops at 500 px
                    browser.get(f"http://127.0.0.1:{port}/?{address}")
                    wait_for_page(browser)
                    browser.set_window_size(width, min(page_height(browser) + 100, MAX_HEIGHT))
                    time.sleep(2)  # plotly redraws at the new size
                    path = OUT / f"dashboard-{name}-{device}.png"
                    browser.save_screenshot(str(path))
                    print(f"saved {path}")


if __name__ == "__main__":
    main()
