"""Numbers as people read them, the same in logs, the CLI and the dashboard."""

from __future__ import annotations


def byte_size(n_bytes: float) -> str:
    """'999 B', '1.5 KiB', '5.0 MiB', '3.0 GiB' (GiB the largest unit)."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
