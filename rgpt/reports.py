"""The files stages write for people and for DVC: metrics JSON, CSV tables, PNG plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return path


def write_csv(path: Path, rows: list[dict[str, Any]], fields: Sequence[str] = ()) -> Path:
    """`rows` under the header of the first row's keys; `fields`: the header of a table without rows."""
    if not rows and not fields:
        raise ValueError(f"{path}: no rows, and no field names for the header")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(fields))
        writer.writeheader()
        writer.writerows(rows)
    return path


def pyplot():
    """matplotlib's pyplot on the file-only backend (no display here, nor on a cluster node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 100) -> Path:
    """Lay the figure out, write it as PNG and free it (pyplot keeps every open figure)."""
    plt = pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
