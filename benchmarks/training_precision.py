"""Time one training step of the ``learn`` recipe in float32 and in bf16-mixed autocast, side by side.

The same batches (drawn from a corpus by the recipe's own data module, features from the cache) go
through forward, backward, gradient clipping and an AdamW step, alternating the two precisions over
``--rounds`` so that a change in machine load hits both; then ``torch.profiler`` says where a float32
step's time goes. No Lightning: only the model's own arithmetic is timed.

    python benchmarks/training_precision.py --corpus data/learn --variant continuous --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from flow_omni.training.config import TrainConfig
from flow_omni.training.datamodule import FlowOmniDataModule
from flow_omni.training.train import build_model, recipe_path, set_trainable

VARIANTS = {"continuous": {}, "kmeans": {"tokens": "kmeans", "quantizer": {"codebook_size": 256}}}
PRECISIONS = {"32-true": False, "bf16-mixed": True}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="data/learn")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="continuous")
    p.add_argument("--batches", type=int, default=6, help="timed batches per round and precision")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def main() -> None:
    args = parse_args()
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
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step(batch, bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return time.perf_counter() - t0

    for b in batches[:2]:  # warm-up, both precisions
        step(b, False)
        step(b, True)
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for _ in range(args.rounds):
        for name, bf16 in PRECISIONS.items():
            times[name] += [step(b, bf16) for b in batches[2:]]
    positions = [int(b.attention_mask.sum()) for b in batches[2:]]
    print(f"{args.variant}, {args.threads} thread(s), {len(positions)} batches of 16 ({statistics.mean(positions):.0f}")
    print("non-padding positions on average), each timed once per round and precision:\n")
    print("| precision | ms per step, median | min | max |\n|---|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {1000 * statistics.median(ts):.0f} | {1000 * min(ts):.0f} | {1000 * max(ts):.0f} |")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches[2:5]:
            step(b, False)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    mm = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    print(f"\nfloat32: matrix products (aten::mm, addmm, bmm) hold {100 * mm / total:.0f} % of the step's CPU time")


if __name__ == "__main__":
    main()
