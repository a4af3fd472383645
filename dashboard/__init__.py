"""The Streamlit dashboard: reads the Foldwise database, never writes to it."""

from __future__ import annotations

import sys
from pathlib import Path

APP = Path(__file__).parent / "app.py"


def streamlit_command(port: int, address: str = "127.0.0.1") -> list[str]:
    """`streamlit run` of the app, headless, on one address and port, without telemetry."""
    return [
        *(sys.executable, "-m", "streamlit", "run", str(APP)),
        *("--server.headless", "true", "--server.port", str(port), "--server.address", address),
        *("--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"),
    ]
