"""The grid's numbers so far, from its results JSON: each variant's summary metrics (mean ± std over its
finished seeds), the differences from the continuous baseline, and the noisy fine-tune before → after.

    python benchmarks/robustness_summary.py --json benchmarks/results/robustness.json > summary.md

It reads only the JSON that ``benchmarks/robustness_grid.py`` writes (every kept run's rows), so it works
on an unfinished grid and on results of another commit, and prints Markdown with the report's own tables
(:mod:`flow_omni.eval.report`): a difference is marked ``*`` beyond twice its standard error over seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flow_omni.eval.document import Heading, Text, to_markdown
from flow_omni.eval.report import compared_blocks, differences_blocks, finetune_blocks
from flow_omni.eval.robustness import FINETUNED, UNSEEN, aggregate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default="benchmarks/results/robustness.json", help="the grid's results JSON")
    args = p.parse_args(argv)
    path = Path(args.json)
    try:
        data = json.loads(path.read_text())
        rows, planned = data["rows"], data["runs_planned"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {path}: not a results JSON of benchmarks/robustness_grid.py ({exc})", file=sys.stderr)
        return 2
    agg = {(a["variant"], a["task"], a["condition"], a["metric"]): a for a in aggregate(rows)}
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    base = [v for v in dict.fromkeys(name.rsplit("-seed", 1)[0] for name in planned) if v in variants]
    tuned = [v for v in base if v + FINETUNED in variants]
    conditions = list(dict.fromkeys(r["condition"] for r in rows if r["task"] == "asr" and r["condition"] != UNSEEN))
    worst = [c for c in conditions if c.endswith("@0")] or conditions[-1:]
    blocks = [
        Heading("The grid so far"),
        Text([f"{len(data['runs_finished'])} of {len(planned)} runs scored ({path}, commit {data['commit'][:7]})."]),
        *compared_blocks(agg, base + [v + FINETUNED for v in tuned], worst),
    ]
    if len(base) > 1:
        blocks += differences_blocks(agg, base, worst)
    if tuned:
        blocks += finetune_blocks(agg, tuned, conditions)
    print(to_markdown(blocks), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
