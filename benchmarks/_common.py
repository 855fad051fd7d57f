"""What every benchmark script shares: writing its CSV atomically (a killed run leaves no half table)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from amed._io import atomic_write_bytes


def write_csv(path, rows: list[dict], fields: list[str] | None = None) -> Path:
    """Rows as CSV at ``path`` (parent folders created), written atomically; fields default to row 0's keys."""
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=fields or list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue().encode())
    return path
