"""The grid's numbers so far, from its results JSON: each variant's summary metrics (mean ± std over its
finished seeds), the differences from the continuous baseline, and the noisy fine-tune before → after.

    python benchmarks/robustness_summary.py --json benchmarks/results/robustness.json > summary.md
    python benchmarks/robustness_summary.py --json benchmarks/results/robustness.json --report runs/grid

``--report DIR`` also writes the full report of those runs into DIR with this commit's code:
``report.md``, ``report.html``, the PNG plots, ``results.json`` and ``results.csv``, with the sample
audio that the grid's output folder holds (``DIR/wavs``; none elsewhere). A report already in DIR is
replaced only with ``--overwrite``. The runs themselves are not touched: a grid trained by an older
commit gets this commit's tables and tests, as long as this commit reads its settings (an unknown
setting is a one-line error).

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

from flow_omni.bench import RobustnessConfig
from flow_omni.bench.results import write_results
from flow_omni.checks import check_output_folder
from flow_omni.errors import ConfigError, FlowOmniError
from flow_omni.eval.document import Heading, Text, to_markdown
from flow_omni.eval.report import compared_blocks, differences_blocks, finetune_blocks, write_robustness_report
from flow_omni.eval.robustness import FINETUNED, UNSEEN, aggregate

#: What --report writes besides the plots (``*_vs_snr_*.png``); none is replaced without --overwrite.
REPORT_FILES = ("report.md", "report.html", "results.json", "results.csv")
PLOTS = "*_vs_snr_*.png"
#: What the report's cost table reads from each run's timing.
TIMING_KEYS = ("train_s", "eval_s", "parameters")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default="benchmarks/results/robustness.json", help="the grid's results JSON")
    p.add_argument("--report", metavar="DIR", help="also write the full report of the kept runs into DIR")
    p.add_argument("--overwrite", action="store_true", help="with --report: replace a report DIR already holds")
    args = p.parse_args(argv)
    if args.overwrite and not args.report:
        print(
            "error: --overwrite replaces a report that --report DIR writes; expected --report with it", file=sys.stderr
        )
        return 2
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
    # Everything --report needs is checked before anything is printed or written.
    try:
        inputs = report_inputs(data, Path(args.report), args.overwrite) if args.report else None
    except (FlowOmniError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
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
    if inputs is not None:
        out = Path(args.report)
        cfg, timings, sizes = inputs
        out.mkdir(parents=True, exist_ok=True)
        report = write_robustness_report(out, cfg, rows, aggregate(rows), timings, sizes, status=runs)
        write_results(out, rows, timings)
        print(f"report: {report}\npage:   {out / 'report.html'}", file=sys.stderr)
    return 0


def report_inputs(data: dict, out: Path, overwrite: bool) -> tuple[RobustnessConfig, dict, dict]:
    """What ``--report`` needs from the JSON: the grid's settings, each kept run's timing (in the runner's
    order and naming: "kmeans/seed1") and the test sets' sizes. Raises ValueError (or FlowOmniError for
    the folder) with the reason when a report cannot be written into ``out`` as asked."""
    try:
        cfg = RobustnessConfig.from_dict(data["config"])
        timings = {
            name.replace("-seed", "/seed"): data["runs"][name]["timing"]
            for name in data["runs_planned"]
            if name in data["runs"]
        }
        for t in timings.values():
            for k in TIMING_KEYS:
                float(t[k])  # the cost table shows each as a number
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"the results JSON has no usable grid settings or run timings for a report ({exc!r})"
        ) from None
    check_output_folder(out, "--report")
    plots = sorted(p.name for p in out.glob(PLOTS)) if out.is_dir() else []
    there = [name for name in REPORT_FILES if (out / name).exists()] + (
        [f"{len(plots)} plot(s) {PLOTS}"] if plots else []
    )
    if there and not overwrite:
        raise ValueError(f"{out} already holds {', '.join(there)}; pass --overwrite to replace them")
    rows = data["rows"]

    def items(task: str, condition: str) -> int:
        return next((r["n"] for r in rows if r["task"] == task and r["condition"] == condition), 0)

    return cfg, timings, {"test": items("asr", "clean"), "qa": items("qa", "clean"), "unseen": items("asr", UNSEEN)}


if __name__ == "__main__":
    sys.exit(main())
