"""Screenshot every dashboard page in headless Chromium: var/screenshots/dashboard-<page>.png.

Starts the dashboard on loopback on the demo database (`make demo` first; `make demo-next` and a
second `foldwise run` give the run comparisons something to show), or on FOLDWISE_DATABASE_URL.
Needs: `pip install -e '.[dev]'` and Debian's chromium + chromium-driver.
"""

from __future__ import annotations

import time

from browser import ROOT, background, chromium, free_port, wait_for_url
from selenium.webdriver.common.by import By

from dashboard import streamlit_command

OUT = ROOT / "var" / "screenshots"
PAGES = ["Overview", "Runs", "Run detail", "Data", "Predictions"]


def main() -> None:
    port = free_port()
    command = streamlit_command(port)
    with background(command, {}, OUT / "dashboard.log") as server:
        wait_for_url(f"http://127.0.0.1:{port}/_stcore/health", server)
        with chromium(width=1500, height=2200) as browser:
            browser.get(f"http://127.0.0.1:{port}")
            time.sleep(6)
            for page in PAGES:
                # The sidebar's page radio: click the option's label.
                option = browser.find_element(By.XPATH, f"//label[.//p[normalize-space()='{page}']]")
                option.click()
                time.sleep(6)  # the page runs its queries and plotly draws its charts
                path = OUT / f"dashboard-{page.lower().replace(' ', '-')}.png"
                browser.save_screenshot(str(path))
                print(f"saved {path}")


if __name__ == "__main__":
    main()
