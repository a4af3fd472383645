"""docker/smoke.sh's check of the dashboard: its Overview page, drawn in headless Chromium, names the run.

    python docker/dashboard_shows_run.py http://127.0.0.1:18501 7

Streamlit sends a page's content over a websocket after the HTML shell, so only a browser sees it.
Needs the dev tools (`pip install -e '.[dev]'`: selenium) and Debian's chromium + chromium-driver.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from browser import chromium  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

TIMEOUT_SECONDS = 90


def main(url: str, run_id: int) -> None:
    named = re.compile(rf"\brun {run_id}\b")
    with chromium() as browser:
        browser.get(url)
        deadline = time.monotonic() + TIMEOUT_SECONDS
        text = ""
        while time.monotonic() < deadline:
            text = browser.find_element(By.TAG_NAME, "body").text
            if named.search(text):
                line = next(line for line in text.splitlines() if named.search(line))
                print(f"dashboard at {url} shows run {run_id}: {line!r}")
                return
            time.sleep(1)
    raise SystemExit(
        f"the dashboard at {url} did not show run {run_id} in {TIMEOUT_SECONDS}s; it showed:\n{text}"
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
