"""Screenshot the Prefect UI's run form of the `retrain` deployment, as `foldwise serve` registers it.

Starts a Prefect server on loopback (its own PREFECT_HOME under var/), serves the demo deployment,
opens the custom-run form in headless Chromium and saves var/screenshots/prefect-run-form.png.
Needs: `pip install -e '.[dev]'` and Debian's chromium + chromium-driver.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request

from browser import ROOT, background, chromium, free_port, wait_for_url

OUT = ROOT / "var" / "screenshots"


def deployment_id(api: str, name: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/deployments/name/retrain/{name}", timeout=5) as response:
                return json.load(response)["id"]
        except OSError:
            time.sleep(1)
    raise SystemExit(f"deployment retrain/{name} was not registered within {timeout:.0f}s")


def main() -> None:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        "PREFECT_HOME": str(ROOT / "var" / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    serve = [sys.executable, "-m", "foldwise", "serve", "--config", "configs/demo.toml"]
    serve += ["--set", "service.cron='0 3 * * *'", "--set", "service.timezone='Europe/Paris'"]
    with background(server, env, OUT / "prefect-server.log") as server_process:
        wait_for_url(f"{api}/health", server_process)
        with background(serve, env, OUT / "foldwise-serve.log"):
            form = f"http://127.0.0.1:{port}/deployments/deployment/{deployment_id(api, 'demo')}/run"
            with chromium(height=2600) as browser:
                browser.get(form)
                time.sleep(8)  # the UI renders the form from the parameter schema after loading
                OUT.mkdir(parents=True, exist_ok=True)
                browser.save_screenshot(str(OUT / "prefect-run-form.png"))
    print(f"saved {OUT / 'prefect-run-form.png'} (form at {form})")


if __name__ == "__main__":
    main()
