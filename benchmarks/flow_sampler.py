"""Benchmark of the flow head's fixed-grid sampler: fast loop vs torchdiffeq vs compiled, per NFE.

Times one ``FlowHead.sample`` call, i.e. one decoding step's flow-head work for a batch of rows
(one token per row), for every solver (euler, midpoint, heun) × NFE (network evaluations per token;
midpoint and heun take two per step, so they have no odd NFE) × batch size, by three routes side by
side in this one run:

- ``odeint``: ``fast=False``, torchdiffeq (the reference);
- ``fast``: the default fixed-grid loop (cached grid time embeddings, adaLN modulations of all the
  grid's times formed once per call);
- ``compiled``: the fast loop with ``compile=True`` (torch.compile of its whole trajectory; the first
  call of each shape compiles and is not timed, its seconds are printed).

The head has the tiny preset's shape by default (D = 400 = r 4 × 100 mels, condition 256, width 256,
depth 3, prior centred on the previous token); its weights are random, which does not change the
time, and non-zero, so the max-difference columns compare real fields. Times: ``time.perf_counter``,
median of ``--repeats`` calls per cell after a warm-up call, the routes called in turn so that load
from other processes hits all alike; one intra-op thread unless ``--threads`` says otherwise. With
``--json PATH`` it also writes the settings, commit, machine and every cell.

    python benchmarks/flow_sampler.py                       # the full table, ~1 min on an idle core
    python benchmarks/flow_sampler.py --json benchmarks/results/flow_sampler.json
    python benchmarks/flow_sampler.py --nfe 2 10 --batches 1 --repeats 3   # a quick check
    python benchmarks/flow_sampler.py --routes fast --evict-mb 0 32        # warm caches against cold
    python benchmarks/flow_sampler.py --routes fast --between sdpa llm     # after other kernels

Inside generation the head samples between two LLM steps. Two options time it after other work
(untimed, before every timed call), each setting a column of its own in the same run:

- ``--evict-mb``: read this many MB of other data, so the call finds the CPU caches holding something
  else. 0 is back-to-back calls (the head's weights stay cached).
- ``--between``: run other kernels: ``sdpa``, four attention calls of one query over 30 keys (the tiny
  preset's heads; almost no data); ``llm``, one decoding step of the tiny preset's backbone
  (untrained, 1 position, no cache; it reads the LLM's weights, about 12 MB).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from record import write_result  # benchmarks/record.py, beside this script
from torch import nn

from flow_omni import FlowOmni, FlowOmniConfig
from flow_omni.models import FlowHead, FlowHeadConfig
from flow_omni.models.ode import FAST_SOLVERS

ROUTES = ("odeint", "fast", "compiled")
ROUTE_ARGS = {"odeint": dict(fast=False), "fast": dict(fast=True), "compiled": dict(fast=True, compile=True)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--token-dim", type=int, default=400, help="token dims D (r * n_mels)")
    p.add_argument("--cond-dim", type=int, default=256, help="condition dims C (LLM hidden size)")
    p.add_argument("--width", type=int, default=256, help="MLP width")
    p.add_argument("--depth", type=int, default=3, help="residual blocks")
    p.add_argument("--solvers", nargs="+", default=list(FAST_SOLVERS), choices=list(FAST_SOLVERS))
    p.add_argument("--nfe", type=int, nargs="+", default=[1, 2, 3, 4, 6, 10, 32], help="evaluations per token")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="rows per call")
    p.add_argument("--routes", nargs="+", default=list(ROUTES), choices=ROUTES)
    p.add_argument("--cfg-scale", type=float, default=1.0, help="!= 1 runs both CFG branches in one batch")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per cell (median reported)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--evict-mb", type=float, nargs="+", default=[0.0], help="MB of other data read before each call (0 = none)"
    )
    p.add_argument("--between", nargs="*", default=[], choices=sorted(BETWEEN), help="kernels run before each call")
    p.add_argument("--json", type=Path, default=None, help="also write settings, commit, machine and cells here")
    return p.parse_args()


def build_head(args: argparse.Namespace) -> FlowHead:
    torch.manual_seed(args.seed)
    cfg = FlowHeadConfig(
        token_dim=args.token_dim,
        cond_dim=args.cond_dim,
        width=args.width,
        depth=args.depth,
        prior="previous",
        prior_std=0.5,
    )
    head = FlowHead(cfg)
    with torch.no_grad():  # zero-initialised layers would give v = 0: perturb everything
        for p in head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return head.eval()


def measure_cell(
    head: FlowHead, inputs: dict, solver: str, steps: int, args: argparse.Namespace, before: dict[str, Callable]
) -> dict:
    """Median ms per call of each column (a route after each workload of :func:`workloads`), max |route -
    odeint| and the first call's seconds. A column is named by its route and, after ``@``, the workload."""

    def call(route: str) -> torch.Tensor:
        return head.sample(**inputs, steps=steps, solver=solver, cfg_scale=args.cfg_scale, **ROUTE_ARGS[route])

    first_s, outputs = {}, {}
    for route in args.routes:  # warm-up; a compiled route's first call of a shape compiles
        t0 = time.perf_counter()
        outputs[route] = call(route)
        first_s[route] = time.perf_counter() - t0
    times = {column(r, w): [] for r in args.routes for w in before}
    for _ in range(args.repeats):
        for route in args.routes:
            for name, work in before.items():
                work()
                t0 = time.perf_counter()
                call(route)
                times[column(route, name)].append(time.perf_counter() - t0)
    cell = {"ms": {r: 1000 * statistics.median(t) for r, t in times.items()}, "first_call_s": first_s}
    if "odeint" in outputs:
        ref = outputs["odeint"]
        cell["max_abs_diff_vs_odeint"] = {r: (o - ref).abs().max().item() for r, o in outputs.items() if r != "odeint"}
    return cell


def _sdpa_calls() -> Callable[[], None]:
    q, kv = torch.randn(1, 4, 1, 64), torch.randn(1, 4, 30, 64)

    def run() -> None:
        for _ in range(4):
            nn.functional.scaled_dot_product_attention(q, kv, kv)

    return run


def _llm_step() -> Callable[[], None]:
    torch.manual_seed(0)
    llm = FlowOmni(FlowOmniConfig.preset("tiny")).backbone.base_model.eval()
    x = torch.randn(1, 1, llm.config.hidden_size)

    def run() -> None:
        with torch.no_grad():
            llm(inputs_embeds=x)

    return run


#: ``--between`` workloads: name → builder of a function that runs it once.
BETWEEN: dict[str, Callable[[], Callable[[], None]]] = {"sdpa": _sdpa_calls, "llm": _llm_step}


def workloads(args: argparse.Namespace) -> dict[str, Callable[[], None]]:
    """What runs (untimed) before each timed call, by column suffix: ``""`` nothing, ``"<N>MB"`` a read of
    N MB of float32 data (summing a tensor reads it through the caches), and each ``--between`` kernel."""
    out: dict[str, Callable[[], None]] = {}
    for mb in args.evict_mb:
        if mb <= 0:
            out[""] = lambda: None
        else:
            buf = torch.ones(int(mb * 2**20) // 4)
            out[f"{mb:g}MB"] = buf.sum
    for name in args.between:
        out[name] = BETWEEN[name]()
    return out


def column(route: str, workload: str) -> str:
    """A timing column's name: the route, and after ``@`` what ran before each call (nothing: no suffix)."""
    return f"{route}@{workload}" if workload else route


def print_table(batch: int, cells: list[dict], columns: list[str]) -> None:
    """``columns``: the timing columns (:func:`column`), each also as a ratio to ``fast``."""
    print(f"### Batch {batch}: ms per call ({batch} token(s), one decoding step)\n")
    ratios = [r for r in columns if r != "fast" and "fast" in columns]
    head = ["solver", "NFE", "steps"] + [f"{r} ms" for r in columns] + [f"{r} / fast" for r in ratios]
    diffs = [r for r in ROUTES if r != "odeint" and r in columns and "odeint" in columns]
    head += [f"max abs diff {r} vs odeint" for r in diffs]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for c in cells:
        ms = c["ms"]
        row = [c["solver"], str(c["nfe"]), str(c["steps"])] + [f"{ms[r]:.3f}" for r in columns]
        row += [f"{ms[r] / ms['fast']:.2f}" for r in ratios]
        row += [f"{c['max_abs_diff_vs_odeint'][r]:.1e}" for r in diffs]
        print("| " + " | ".join(row) + " |")
    print()


def main() -> None:
    args = parse_args()
    load_at_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    head = build_head(args)
    n_params = sum(p.numel() for p in head.parameters())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), load average "
        f"{load_at_start[0]:.2f} on {os.cpu_count()} cores; FlowHead {n_params / 1e6:.2f} M parameters (D "
        f"{args.token_dim}, C {args.cond_dim}, width {args.width}, depth {args.depth}), cfg_scale {args.cfg_scale:g}\n"
    )
    before = workloads(args)  # built once: the LLM workload builds a model
    g = torch.Generator().manual_seed(args.seed + 1)
    cells = []
    for batch in args.batches:
        inputs = dict(
            z=torch.randn(batch, args.cond_dim, generator=g),
            prev=torch.randn(batch, args.token_dim, generator=g),
            noise=torch.randn(batch, args.token_dim, generator=g),
        )
        rows = []
        for solver in args.solvers:
            per_step = FAST_SOLVERS[solver]
            for nfe in args.nfe:
                if nfe % per_step:
                    continue  # two evaluations per step: no odd NFE
                cell = measure_cell(head, inputs, solver, nfe // per_step, args, before)
                rows.append(dict(batch=batch, solver=solver, nfe=nfe, steps=nfe // per_step) | cell)
                print(
                    f"  batch {batch} {solver} NFE {nfe}: "
                    + ", ".join(f"{r} {ms:.3f} ms" for r, ms in cell["ms"].items()),
                    file=sys.stderr,  # progress; stdout keeps only the tables
                    flush=True,
                )
        cells += rows
        if "compiled" in args.routes:
            first = max(c["first_call_s"]["compiled"] for c in rows)
            print(f"\nslowest first compiled call at batch {batch} (compiling): {first:.1f} s")
        print()
        print_table(batch, rows, [column(r, w) for r in args.routes for w in before])
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json is not None:
        write_result(args.json, "flow_sampler", args, load_at_start, flow_head_parameters=n_params, cells=cells)


if __name__ == "__main__":
    main()
