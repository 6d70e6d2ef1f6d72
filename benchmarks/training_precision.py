"""Time one training step of the ``learn`` recipe in float32 and in bf16-mixed autocast, side by side.

The same batches (drawn from a corpus by the recipe's own data module, features from the cache) go
through forward, backward, gradient clipping and an AdamW step, alternating the settings over
``--rounds`` so that a change in machine load hits each; then ``torch.profiler`` says where a float32
step's time goes. No Lightning: only the model's own arithmetic is timed. Under bf16 autocast the
attention runs two ways: autocast's bf16 kernels ("sdpa") and float32 kernels ("sdpa_float32", the
recipe's), each on its own copy of the same weights; and with the recipe's attention, autocast's
matrix products emulated in float32 (``bf16-mixed emulated``, :mod:`flow_omni.emulated_bf16`, what a
``bf16-mixed`` run does on a CPU without native bf16 kernels).

    python benchmarks/training_precision.py --corpus data/learn --variant continuous --threads 1

With ``--json PATH`` it also writes the settings, commit, machine and every step's time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from pathlib import Path

import torch
from matmul_rate import peak_gflops  # benchmarks/matmul_rate.py, beside this script
from record import write_result  # benchmarks/record.py, beside this script
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from flow_omni.emulated_bf16 import emulated_bf16_matmuls
from flow_omni.models.backbone import SDPA_FLOAT32
from flow_omni.training.config import TrainConfig
from flow_omni.training.datamodule import FlowOmniDataModule
from flow_omni.training.train import build_model, recipe_path, set_trainable

VARIANTS = {"continuous": {}, "kmeans": {"tokens": "kmeans", "quantizer": {"codebook_size": 256}}}
#: (precision, attention): whether autocast is on, the backbone's attn_implementation, and whether
#: autocast's matrix products are emulated in float32
SETTINGS = {
    ("32-true", "sdpa"): (False, "sdpa", False),
    ("bf16-mixed", "sdpa"): (True, "sdpa", False),
    ("bf16-mixed", SDPA_FLOAT32): (True, SDPA_FLOAT32, False),
    ("bf16-mixed emulated", SDPA_FLOAT32): (True, SDPA_FLOAT32, True),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="data/learn")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="continuous")
    p.add_argument("--batches", type=int, default=6, help="timed batches per round and precision")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--no-native-bf16",
        action="store_true",
        help="leave out the rows on torch's own bf16 kernels (ten times slower where bf16 is not native)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    load_at_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    over = {"data": {"train": [os.path.join(args.corpus, "train.jsonl")], "valid": []}}
    over["model"] = {"overrides": VARIANTS[args.variant]}
    cfg = TrainConfig.load(recipe_path("learn")).merged(over)
    torch.manual_seed(0)
    model = build_model(cfg)
    data = FlowOmniDataModule(model, cfg.data, seed=0)
    data.setup("fit")
    mels = data.speech_mels(cfg.stats_max_files)
    model.fit_speech_stats(mels=mels)
    if model.speech.needs_fit:
        model.fit_speech_head([model.speech_tokenizer.encode_mel(m) for m in mels])
    set_trainable(model, cfg)
    loader = iter(data._loader(data.train_entries, shuffle=True))
    batches = [next(loader).batch for _ in range(args.batches + 2)]
    models, opts = {}, {}
    settings = {k: v for k, v in SETTINGS.items() if not (args.no_native_bf16 and v[0] and not v[2])}
    for attn in {a for _, a, _ in settings.values()}:  # the same weights under each attention implementation
        models[attn] = build_model(cfg.merged({"model": {"overrides": {"backbone": {"attn_implementation": attn}}}}))
        models[attn].load_state_dict(model.state_dict())
        set_trainable(models[attn], cfg)
        models[attn].train()
        opts[attn] = torch.optim.AdamW(models[attn].parameters(), lr=1e-4)

    def step(batch, bf16: bool, attn: str, emulate: bool) -> float:
        m, opt = models[attn], opts[attn]
        t0 = time.perf_counter()
        with emulated_bf16_matmuls() if emulate else contextlib.nullcontext():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = m(batch)
            out.loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return time.perf_counter() - t0

    for b in batches[:2]:  # warm-up, every setting
        for setting in settings.values():
            step(b, *setting)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in settings}
    for _ in range(args.rounds):
        for key, setting in settings.items():
            times[key] += [step(b, *setting) for b in batches[2:]]
    positions = [int(b.attention_mask.sum()) for b in batches[2:]]
    print(f"{args.variant}, {args.threads} thread(s), {len(positions)} batches of 16 ({statistics.mean(positions):.0f}")
    print("non-padding positions on average), each timed once per round and precision:\n")
    # The mean is what a run's wall time follows; short batches and long ones gain differently.
    print("| precision | attention | ms per step, mean | median | min | max |\n|---|---|---|---|---|---|")
    for (name, attn), ts in times.items():
        ms = [1000 * statistics.mean(ts), 1000 * statistics.median(ts), 1000 * min(ts), 1000 * max(ts)]
        print(f"| {name} | {attn} | " + " | ".join(f"{x:.0f}" for x in ms) + " |")
    # Times from a plain profile; the products' FLOPs counted in a pass of their own over the same batches,
    # since the profiler's own FLOP counting (with_flops) doubled a step's profiled time here.
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches[2:5]:
            step(b, False, "sdpa", False)
    with FlopCounterMode(display=False) as counter:
        for b in batches[2:5]:
            step(b, False, "sdpa", False)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    products = ("mm", "addmm", "bmm")
    mm_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in [f"aten::{p}" for p in products])
    flops = sum(
        n for op, n in counter.get_flop_counts()["Global"].items() if str(op) in [f"aten.{p}" for p in products]
    )
    # What the step's products do per second against a large product on the same thread: how much a
    # float32 step could still gain from faster kernels, as opposed to doing less arithmetic.
    rate, peak = flops / mm_us / 1e3, peak_gflops()
    print(
        f"\nfloat32: matrix products (aten::mm, addmm, bmm) hold {100 * mm_us / total:.0f} % of the step's CPU "
        f"time, at {rate:.1f} GFLOP/s; a 1024³ product runs at {peak:.1f} GFLOP/s on this thread"
    )
    if args.json:
        steps = [{"precision": p, "attention": a, "seconds": ts} for (p, a), ts in times.items()]
        float32_products = {"share": mm_us / total, "gflops": rate, "peak_gflops": peak}
        write_result(
            args.json,
            "training_precision",
            args,
            load_at_start,
            positions=positions,
            steps=steps,
            float32_products=float32_products,
        )


if __name__ == "__main__":
    main()
