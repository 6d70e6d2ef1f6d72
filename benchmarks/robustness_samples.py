"""The sample audio of a benchmark's report from one seed's trained models, for an output folder whose
first seed's models are gone.

    python benchmarks/robustness_samples.py --out runs/grid --seed 2
    python benchmarks/robustness_summary.py --report runs/grid --overwrite   # the report, with the samples

The benchmark keeps sample WAVs as it scores its first seed. A grid resumed across machines from kept
scores (``benchmarks/robustness_grid.py``) has no such models, so its page would have nothing to play.
This reads the folder's ``config.yaml`` (written by the benchmark), loads every variant's model of
``--seed`` whose scores are in its run folder (and its noisy fine-tune), and keeps what each says on the
first ``sample_wavs`` items of each task and condition in ``<out>/wavs/<variant>``, with the benchmark's
thread count (:func:`flow_omni.bench.robustness.keep_samples`). Samples already there are replaced only
with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from flow_omni.bench import RobustnessConfig
from flow_omni.bench.robustness import keep_samples
from flow_omni.config import parse_overrides
from flow_omni.errors import FlowOmniError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the benchmark's output folder (holds config.yaml and runs/)")
    p.add_argument("--seed", type=int, required=True, help="the seed whose trained models speak")
    p.add_argument("--overwrite", action="store_true", help="replace samples already kept in <out>/wavs")
    p.add_argument("--set", nargs="*", default=[], help="RobustnessConfig overrides key=value (e.g. sample_wavs=2)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        if not (out / "config.yaml").is_file():
            raise FlowOmniError(f"{out} has no config.yaml; expected the output folder of a robustness benchmark")
        cfg = RobustnessConfig.load(out / "config.yaml").merged({**parse_overrides(args.set), "out_dir": str(out)})
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        folders = keep_samples(cfg, args.seed, overwrite=args.overwrite, progress=not args.no_progress)
    except FlowOmniError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for folder in folders:
        print(f"samples: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
