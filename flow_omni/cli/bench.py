"""``flow-omni`` commands that train and compare models: ``demo`` and ``bench robustness``."""

from __future__ import annotations

import argparse
import time

from flow_omni.bench import RobustnessConfig, run_robustness
from flow_omni.config import parse_overrides


def demo_command(args: argparse.Namespace) -> None:
    """the main job on the built-in default: continuous vs discrete speech tokens, trained and compared under
    noise (minutes on a CPU; the README gives the measured time)

    Build the default synthetic corpus, train the continuous variant and a k-means variant with the same
    budget, run a reduced robustness benchmark (ASR, TTS, spoken QA under clean / noisy / pitch-shifted /
    unseen-voice input) and write report.md, the listening page report.html, PNG plots, WAVs and
    results.json/csv. The full benchmark is `flow-omni bench robustness`.
    """
    cfg = RobustnessConfig.demo(args.out).merged(parse_overrides(args.set or []))
    t0 = time.perf_counter()
    report = run_robustness(cfg, progress=not args.no_progress, title="demo")
    out = report.parent
    print(
        f"\ndemo finished in {(time.perf_counter() - t0) / 60:.1f} min: continuous vs discrete speech tokens, "
        f"{len(cfg.variants)} variants x {len(cfg.conditions()) + 1} conditions"
    )
    print(f"report:  {report}")
    print(f"page:    {out / 'report.html'}  (tables, plots and the audio side by side; open it in a browser)")
    print(f"plots:   {', '.join(str(p) for p in sorted(out.glob('*.png')))}")
    print(f"audio:   {out / 'wavs'}  (inputs as heard, spoken answers, TTS outputs)")
    print(f"numbers: {out / 'results.json'}, {out / 'results.csv'}")
    print(
        f'models:  {out / "runs"}  (try: flow-omni speak "what is two plus three" -o hi.wav '
        f"--model {out / 'runs' / 'continuous-seed0' / 'model'})"
    )


def demo_arguments(d: argparse.ArgumentParser) -> None:
    d.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    d.add_argument(
        "--set",
        nargs="*",
        action="extend",
        metavar="KEY=VALUE",
        help="override RobustnessConfig entries, e.g. seeds=[0,1]",
    )
    d.add_argument("--no-progress", action="store_true", help="no progress bars (the stage lines still show)")


def robustness_command(args: argparse.Namespace) -> None:
    """continuous vs discrete tokens under noise, pitch, rate and unseen voices

    Train every variant (continuous, k-means, RVQ, low-rate) with the same budget for each seed, score
    ASR / TTS / spoken QA under each condition, and write report.md, the listening page report.html, PNG
    plots, sample WAVs and results.json/csv. Finished runs are reused, so rerunning the command resumes a
    long benchmark.
    """
    cfg = RobustnessConfig.load(args.config) if args.config else RobustnessConfig()
    cfg = cfg.merged(parse_overrides(args.set or []))
    if args.out:
        cfg = cfg.merged({"out_dir": args.out})
    report = run_robustness(cfg, progress=not args.no_progress, title="bench")
    print(f"\nreport:  {report}")
    print(f"page:    {report.parent / 'report.html'}  (tables, plots and the audio side by side)")
    print(f"numbers: {report.parent / 'results.json'}, {report.parent / 'results.csv'}")
    print(f"plots:   {', '.join(p.name for p in sorted(report.parent.glob('*.png')))}")
    print(f"audio:   {report.parent / 'wavs'}")


def robustness_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("--config", help="RobustnessConfig as YAML (default: the full benchmark)")
    r.add_argument(
        "--set", nargs="*", action="extend", metavar="KEY=VALUE", help="override entries, e.g. seeds=[0] max_items=8"
    )
    r.add_argument("--out", help="output directory (overrides out_dir)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars (the stage lines still show)")
