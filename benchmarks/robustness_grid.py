"""The full continuous-vs-discrete grid (``RobustnessConfig()``'s defaults), resumable across machines.

The grid is 5 variants x 3 seeds of the ``learn`` recipe, scored under noise, rooms, pitch, rate and
unseen voices, plus a noisy-domain fine-tune of two of them: hours of work, longer than one sitting.
Each finished run's scores are small, so this script keeps them in the repository
(``benchmarks/results/robustness/<run>/``) and puts them back into a new output folder before
the grid starts: a run whose scores are kept is not trained again (for the same training and
evaluation settings; :mod:`flow_omni.bench.cache`), even where its model is gone.

    python benchmarks/robustness_grid.py --out runs/grid            # restore, run what is left, keep, report
    python benchmarks/robustness_grid.py --out runs/grid --keep     # only keep what has finished (while it runs)

Both write ``benchmarks/results/robustness.json``: every run's rows, the mean ± std of each cell over the
finished seeds, the budget, the commit and the machine. The report (``report.md``, ``report.html``,
plots) is written in ``--out`` when the grid finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from record import write_result

from flow_omni.bench import RobustnessConfig, run_robustness
from flow_omni.bench.cache import cached_run, read_keyed, run_dir, weights_stamp
from flow_omni.bench.robustness import run_settings
from flow_omni.config import parse_overrides
from flow_omni.eval.robustness import aggregate

KEPT = ("eval.json", "latency.json")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/grid", help="the benchmark's output folder (models, WAVs, report)")
    p.add_argument("--corpus", default=None, help="corpus folder (default: RobustnessConfig's, built if missing)")
    p.add_argument("--results", default="benchmarks/results/robustness", help="where finished runs' scores are kept")
    p.add_argument("--json", default="benchmarks/results/robustness.json")
    p.add_argument("--keep", action="store_true", help="only keep the finished runs' scores and write the JSON")
    p.add_argument("--set", nargs="*", default=[], help="RobustnessConfig overrides key=value")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args()


def config(args: argparse.Namespace) -> RobustnessConfig:
    over = parse_overrides(args.set)
    over["out_dir"] = args.out
    if args.corpus:
        over["corpus"] = args.corpus
    return RobustnessConfig().merged(over)


def restore(kept: Path, out: Path) -> int:
    """Copy kept score files into ``out/runs`` where the run has none; returns how many runs got some."""
    n = 0
    for run in sorted(kept.glob("*/")) if kept.is_dir() else []:
        dest = out / "runs" / run.name
        copied = False
        for name in KEPT:
            if (run / name).is_file() and not (dest / name).exists():
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run / name, dest / name)
                copied = True
        n += copied
    return n


def keep(cfg: RobustnessConfig, kept: Path) -> list[str]:
    """Copy the score files of each run scored with ``cfg``'s settings from its folder into ``kept``;
    returns those runs' names. Scores of other settings (an earlier budget, say) are left where they are."""
    scored = []
    for v in cfg.variants:
        for s in cfg.seeds:
            train = run_settings(cfg, v, s, Path(cfg.corpus))
            if cached_run(cfg, v, s, train) is None:
                continue
            run = run_dir(cfg, v, s)
            scored.append(run.name)
            (kept / run.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run / "eval.json", kept / run.name / "eval.json")
            # Latency is timed after every run has finished: until then the folder may hold a file of
            # earlier settings or weights, which is not kept.
            now = {"train": train, "weights": weights_stamp(run / "model")}
            latency = read_keyed(run / "latency.json", now, partial=True)
            stale = kept / run.name / "latency.json"
            if latency is not None:
                shutil.copyfile(run / "latency.json", stale)
            elif stale.is_file():
                stale.unlink()
    return scored


def write_json(args: argparse.Namespace, cfg: RobustnessConfig, kept: Path, names: list[str], load: tuple) -> None:
    """``--json``: the rows and timing of the kept runs ``names``, and the mean ± std over the seeds so far."""
    runs, rows = {}, []
    for run in (kept / name for name in names):
        data = json.loads((run / "eval.json").read_text())
        latency = json.loads((run / "latency.json").read_text())["rows"] if (run / "latency.json").is_file() else []
        runs[run.name] = {"timing": data["timing"], "train": data["key"]["train"]}
        rows += data["rows"] + latency
    planned = [f"{v.name}-seed{s}" for v in cfg.variants for s in cfg.seeds]
    write_result(
        Path(args.json),
        "robustness_grid",
        args,
        load,
        config=cfg.to_dict(),
        runs_planned=planned,
        runs_finished=sorted(runs),
        runs=runs,
        cells=aggregate(rows, items=False),  # the per-item values are in the rows
        rows=rows,
    )


def main() -> int:
    args = parse_args()
    load = os.getloadavg()
    cfg = config(args)
    out, kept = Path(cfg.out_dir), Path(args.results)
    if not args.keep:
        n = restore(kept, out)
        print(f"restored the kept scores of {n} run(s) from {kept} into {out / 'runs'}")
        report = run_robustness(cfg, progress=not args.no_progress, title="grid")
        print(f"report: {report}\npage:   {report.parent / 'report.html'}")
    scored = keep(cfg, kept)
    write_json(args, cfg, kept, scored, load)
    print(f"kept the scores of {len(scored)} run(s) in {kept}; {args.json} written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
