"""Benchmark of FlowHead sampling: ODE solver × steps → NFE, time, error against a reference.

Builds a FlowHead (default: 400-dim tokens = r 4 × 100 mels, width 512, depth 3, cond 512), trains
it briefly on a toy conditional two-mode target so that its velocity field is not the trivial
zero of a fresh head, then prints a Markdown table: solver (euler, midpoint, heun, rk4, dopri5) ×
steps → NFE, sampling time per 1000 tokens (each solver by its default route), and RMS distance to a
float64 dopri5 reference (rtol = atol = 1e-7) started from the same noise.

Times: ``time.perf_counter``, one warm-up call, median of ``--repeats`` calls. The fast fixed-grid
loop against torchdiffeq and torch.compile, per NFE at batch 1 and 8, is ``benchmarks/flow_sampler.py``.

    python benchmarks/flow_head.py --help
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch
from matmul_rate import median_us  # benchmarks/matmul_rate.py, beside this script

from flow_omni.models import FlowHead, FlowHeadConfig


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--token-dim", type=int, default=400, help="token dims D (r * n_mels); default 400 = 4 x 100")
    p.add_argument("--cond-dim", type=int, default=512, help="condition dims C (LLM hidden size)")
    p.add_argument("--width", type=int, default=512, help="MLP width")
    p.add_argument("--depth", type=int, default=3, help="residual blocks")
    p.add_argument(
        "--time-scale", type=float, default=1000.0, help="FlowHeadConfig.time_scale (t multiplier before the sinusoid)"
    )
    p.add_argument("--rows", type=int, default=128, help="tokens sampled per call in the timings")
    p.add_argument("--ref-rows", type=int, default=32, help="rows used for the error columns (the reference is slow)")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="fixed-grid step counts")
    p.add_argument("--dopri-tols", type=float, nargs="+", default=[1e-3, 1e-5], help="rtol=atol values for dopri5 rows")
    p.add_argument(
        "--train-steps", type=int, default=150, help="AdamW steps on the toy target (0: random perturbation)"
    )
    p.add_argument("--repeats", type=int, default=3, help="timed calls per cell (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def build_head(args: argparse.Namespace) -> FlowHead:
    """A head whose field is non-trivial: trained on x1 = m(z) ± a + 0.3 ε (two modes per z)."""
    torch.manual_seed(args.seed)
    cfg = FlowHeadConfig(
        token_dim=args.token_dim, cond_dim=args.cond_dim, width=args.width, depth=args.depth, time_scale=args.time_scale
    )
    head = FlowHead(cfg)
    if args.train_steps <= 0:
        with torch.no_grad():  # zero-init layers would give v = 0: perturb everything instead
            for p in head.parameters():
                p.add_(0.02 * torch.randn_like(p))
        return head.eval()
    g = torch.Generator().manual_seed(args.seed + 1)
    proj = torch.randn(args.cond_dim, args.token_dim, generator=g) / args.cond_dim**0.5
    offset = torch.randn(args.token_dim, generator=g)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    for _ in range(args.train_steps):
        z = torch.randn(64, args.cond_dim, generator=g)
        sign = torch.randint(0, 2, (64, 1), generator=g) * 2 - 1
        x1 = z @ proj + sign * offset + 0.3 * torch.randn(64, args.token_dim, generator=g)
        loss = head.loss(x1, z, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"trained {args.train_steps} steps on the toy target, final loss {loss.item():.3f}")
    return head.eval()


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).pow(2).mean().sqrt().item()


def solver_table(head: FlowHead, args: argparse.Namespace) -> None:
    g = torch.Generator().manual_seed(args.seed + 2)
    z = torch.randn(args.rows, args.cond_dim, generator=g)
    noise = torch.randn(args.rows, args.token_dim, generator=g)
    zr, nr = z[: args.ref_rows], noise[: args.ref_rows]
    ref_head = copy.deepcopy(head).double()
    t0 = time.perf_counter()
    ref = ref_head.sample(zr.double(), solver="dopri5", rtol=1e-7, atol=1e-7, noise=nr.double())
    print(
        f"reference: float64 dopri5 rtol=atol=1e-7 on {args.ref_rows} rows, NFE {ref_head.nfe}, "
        f"{time.perf_counter() - t0:.1f} s; RMS of the reference samples {ref.pow(2).mean().sqrt().item():.3f}\n"
    )

    runs = [(s, n, {}) for s in ("euler", "midpoint", "heun", "rk4") for n in args.steps]
    runs += [("dopri5", f"tol {tol:g}", {"rtol": tol, "atol": tol}) for tol in args.dopri_tols]
    print(
        f"### Solver x steps ({args.rows} rows per call, D={args.token_dim}, width {args.width}, depth {args.depth})\n"
    )
    print("| solver | steps | NFE | ms / 1000 tokens | RMS error vs reference |")
    print("|---|---|---|---|---|")
    for solver, steps, kw in runs:
        st = steps if isinstance(steps, int) else 1
        err = rms(head.sample(zr, solver=solver, steps=st, noise=nr, **kw), ref)
        sec = median_us(lambda: head.sample(z, solver=solver, steps=st, noise=noise, **kw), args.repeats) / 1e6
        nfe = head.nfe
        print(f"| {solver} | {steps} | {nfe} | {1000 * sec * 1000 / args.rows:.1f} | {err:.2e} |", flush=True)
    print()


def main() -> None:
    args = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    head = build_head(args)
    n_params = sum(p.numel() for p in head.parameters())
    print(f"FlowHead: {n_params / 1e6:.2f} M parameters, time_scale {args.time_scale:g}\n")
    solver_table(head, args)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
