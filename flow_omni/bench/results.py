"""The benchmark's raw numbers: every row and their aggregate in ``results.json``, the rows in ``results.csv``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from flow_omni.checkpoint import atomic_write_text
from flow_omni.eval.robustness import aggregate

COLUMNS = ["variant", "seed", "task", "condition", "metric", "value", "n"]


def write_results(out: Path, rows: list[dict], timings: dict) -> None:
    """Write ``out/results.json`` (rows with their per-item values, mean ± std over seeds, timings) and
    ``out/results.csv`` (rows, one value each; the per-item values are in the JSON only)."""
    cells = aggregate(rows, items=False)  # the items are in the rows already
    data = {"rows": rows, "aggregate": cells, "timings": timings}
    atomic_write_text(out / "results.json", json.dumps(data, indent=1))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())
