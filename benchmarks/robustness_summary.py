"""The grid's numbers so far, from its results JSON: each variant's summary metrics (mean ± std over its
finished seeds), the differences from the continuous baseline, and the noisy fine-tune before → after.

    python benchmarks/robustness_summary.py --json benchmarks/results/robustness.json > summary.md

It reads only the JSON that ``benchmarks/robustness_grid.py`` writes (every kept run's rows), so it works
on an unfinished grid and on results of another commit, and prints Markdown with the report's own tables
(:mod:`flow_omni.eval.report`): a difference between variants is marked ``*`` where Welch's t-test over
their seeds finds it at the 5 % level, a fine-tune's change where a paired t-test over seeds does.
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
        rows, planned, finished, commit = data["rows"], data["runs_planned"], data["runs_finished"], data["commit"]
        agg = {(a["variant"], a["task"], a["condition"], a["metric"]): a for a in aggregate(rows)}
        variants = list(dict.fromkeys(r["variant"] for r in rows))
        base = [v for v in dict.fromkeys(name.rsplit("-seed", 1)[0] for name in planned) if v in variants]
        asr = (r["condition"] for r in rows if r["task"] == "asr" and r["condition"] != UNSEEN)
        conditions = list(dict.fromkeys(asr))
        runs = f"{len(finished)} of {len(planned)} runs scored ({path}, commit {str(commit)})."
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        print(f"error: {path}: not a results JSON of benchmarks/robustness_grid.py ({exc!r})", file=sys.stderr)
        return 2
    tuned = [v for v in base if v + FINETUNED in variants]
    worst = [c for c in conditions if c.endswith("@0")] or conditions[-1:]
    blocks = [
        Heading("The grid so far"),
        Text([runs]),
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
