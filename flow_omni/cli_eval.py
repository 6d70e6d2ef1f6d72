"""``flow-omni`` subcommands for evaluation: ``bench robustness``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_bench_robustness(args: argparse.Namespace) -> None:
    from flow_omni.eval.robustness import RobustnessConfig, run_robustness
    from flow_omni.training.config import apply_overrides

    data = {}
    if args.config:
        import yaml

        data = yaml.safe_load(Path(args.config).read_text()) or {}
    cfg = RobustnessConfig.from_dict(apply_overrides(data, args.set or []))
    if args.out:
        cfg = cfg.replace(out_dir=args.out)
    report = run_robustness(cfg, progress=not args.no_progress)
    print(f"\nreport:  {report}")
    print(f"numbers: {report.parent / 'results.json'}, {report.parent / 'results.csv'}")
    print(f"plots:   {', '.join(p.name for p in sorted(report.parent.glob('*.png')))}")
    print(f"audio:   {report.parent / 'wavs'}")


def add_commands(sub) -> None:
    b = sub.add_parser("bench", help="benchmarks that train and evaluate models (robustness)")
    bsub = b.add_subparsers(dest="bench_command", required=True)
    r = bsub.add_parser("robustness", help="continuous vs discrete tokens under noise, pitch, rate and unseen voices",
                        description="Train every variant (continuous, k-means, RVQ, low-rate) with the same budget "
                        "for each seed, score ASR / TTS / spoken QA under each condition, and write report.md, "
                        "PNG plots, sample WAVs and results.json/csv. Finished runs are reused, so rerunning "
                        "the command resumes a long benchmark.")
    r.add_argument("--config", help="RobustnessConfig as YAML (default: the full benchmark)")
    r.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override entries, e.g. seeds=[0] max_items=8")
    r.add_argument("--out", help="output directory (overrides out_dir)")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=_cmd_bench_robustness)
