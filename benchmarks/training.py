"""Training throughput of FlowOmni presets on this machine, and of the data pipeline (tables; not a test).

Data: a fixed synthetic manifest written to a temporary folder — ``--items`` entries, each a
question utterance and an answer utterance from ``synth_corpus`` (1–3 s each, 24 kHz) with
made-up transcripts, so every task but MIX (no segments) is drawn with the default task weights.

1. Training: for each preset and r, the real ``train(TrainConfig)`` — what ``flow-omni train``
   runs: Lightning Trainer, the FlowOmniDataModule loader (num_workers 0), FlowOmniModule with
   AdamW, grad clipping, the CSV + TensorBoard loggers and the per-step loss log. A callback
   notes the time at the start and end of each training batch; after ``--warmup`` steps, the
   next ``--steps`` intervals between batch starts are timed. Each interval holds one batch fetch
   (item loading, tokenising, collate) and one forward + backward + AdamW step, so "ms/step" is
   the wall time a user gets; "in-step ms" is the part inside the step (forward, backward,
   optimizer, logging). Checkpoints are pushed past the run so none falls in the timed window.
   The feature cache is warm: train() fits the token statistics first, which reads (and caches)
   the mel of every file.
2. Data pipeline: the training DataLoader of FlowOmniDataModule iterated with no model step.
   Every row runs one untimed pass (warm-up, or filling the cache) and then ``--data-passes``
   timed passes; the first row times the pass that fills a fresh cache.

Audio seconds of a batch = prompt audio (A2T/A2A encoder input) + target speech (T2A/A2A), read
from the batch: (encoder frames + GEN positions) / token rate, i.e. each utterance rounded up to
whole tokens. Tokens = non-padding LLM positions (attention_mask sum).

    python benchmarks/training.py              # tiny + small, r = 1 2 4
    python benchmarks/training.py --quick      # tiny only, few steps (~1–2 minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import random
import shutil
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning  # noqa: E402
import torch  # noqa: E402

from flow_omni.audio.io import save_audio  # noqa: E402
from flow_omni.audio.synth import synth_corpus  # noqa: E402
from flow_omni.data.dataset import DataConfig  # noqa: E402
from flow_omni.data.manifest import ManifestEntry, write_manifest  # noqa: E402
from flow_omni.layout import STATE_GEN  # noqa: E402
from flow_omni.training.datamodule import FlowOmniDataModule  # noqa: E402
from flow_omni.training.train import TrainConfig, build_model, train  # noqa: E402

WORDS = "one two three four five six seven eight nine ten red green blue yellow black white the a of and".split()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "small"])
    p.add_argument("--rs", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--steps", type=int, default=20, help="timed training steps per preset x r")
    p.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--items", type=int, default=64, help="manifest entries (question + answer audio each)")
    p.add_argument("--data-passes", type=int, default=2, help="timed passes over the loader per data row")
    p.add_argument("--workers", type=int, default=2, help="num_workers of the extra data row (0: no such row)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--quick", action="store_true", help="tiny only, 4 steps, 32 items, 1 data pass")
    p.add_argument("--keep", action="store_true", help="keep the temporary data and run folders")
    a = p.parse_args()
    if a.quick:
        a.presets, a.steps, a.warmup, a.items, a.data_passes = ["tiny"], 4, 2, 32, 1
    return a


def make_manifest(root: Path, n: int) -> tuple[Path, float]:
    """``n`` entries of 1–3 s question + 1–3 s answer audio; returns the manifest and its total seconds."""
    (root / "wavs").mkdir(parents=True)
    rng = random.Random(0)
    qs = synth_corpus(n, seed=1, duration_range=(1.0, 3.0))
    ans = synth_corpus(n, seed=2, duration_range=(1.0, 3.0))
    entries, total = [], 0.0
    for i, (q, a) in enumerate(zip(qs, ans)):
        save_audio(root / f"wavs/q{i}.wav", q)
        save_audio(root / f"wavs/a{i}.wav", a)
        dq, da = q.shape[0] / 24000, a.shape[0] / 24000
        total += dq + da
        text = lambda d: " ".join(rng.choices(WORDS, k=max(1, round(2.5 * d))))  # ~2.5 words/s  # noqa: E731
        entries.append(
            ManifestEntry(
                f"u{i}",
                f"wavs/q{i}.wav",
                text(dq),
                duration=dq,
                answer_audio=f"wavs/a{i}.wav",
                answer_text=text(da),
                answer_duration=da,
            )
        )
    return write_manifest(root / "train.jsonl", entries), total


def batch_counts(batch, token_rate: float) -> tuple[float, int]:
    """(audio seconds, non-padding positions) of a training Batch (conv encoder: features are tokens)."""
    frames = int((batch.state == STATE_GEN).sum())
    if batch.audio_lengths is not None:
        frames += int(batch.audio_lengths.sum())
    return frames / token_rate, int(batch.attention_mask.sum())


class StepTimer(lightning.pytorch.Callback):
    def __init__(self) -> None:
        self.starts, self.ends, self.cpu, self.batches = [], [], [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.starts.append(time.perf_counter())
        self.cpu.append(time.process_time())  # CPU time of this process: less sensitive to other jobs' load
        self.batches.append(batch)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.ends.append(time.perf_counter())


def train_row(preset: str, r: int, manifest: Path, work: Path, args) -> dict:
    cfg = TrainConfig.from_dict(
        {
            "out_dir": str(work / f"run_{preset}_r{r}"),
            "threads": args.threads,
            "progress": False,
            "model": {"preset": preset, "r": r},
            "data": {"train": [str(manifest)], "batch_size": args.batch_size},
            "max_steps": args.warmup + args.steps + 1,  # +1: the last timed interval ends at the next batch start
            "checkpoint_every_steps": 10**6,
            "stats_max_files": 10**6,  # every file cached before step 0
        }
    )
    timer = StepTimer()
    with contextlib.redirect_stdout(io.StringIO()):  # train()'s summary line would break the table
        train(cfg, callbacks=[timer])  # the library's own run, plus a timing callback
    model = build_model(cfg)
    w0, w1 = args.warmup, args.warmup + args.steps
    wall = timer.starts[w1] - timer.starts[w0]
    inside = sum(e - s for s, e in zip(timer.starts[w0:w1], timer.ends[w0:w1]))
    audio, tokens = map(sum, zip(*(batch_counts(b, model.config.speech.token_rate) for b in timer.batches[w0:w1])))
    padded = sum(b.attention_mask.numel() for b in timer.batches[w0:w1])  # B x L: what the model computes on
    cpu = timer.cpu[w1] - timer.cpu[w0]
    return dict(
        preset=preset,
        r=r,
        params=model.num_parameters() / 1e6,
        ms=1e3 * wall / args.steps,
        cpu=1e3 * cpu / args.steps,
        load=os.getloadavg()[0],
        inside=1e3 * inside / args.steps,
        audio_s=audio / wall,
        tok_s=tokens / wall,
        tok_step=tokens / args.steps,
        audio_step=audio / args.steps,
        fill=100 * tokens / padded,
    )


class DataRow:
    """One DataLoader configuration; ``one_pass()`` iterates it once (one epoch of the batch plan)."""

    def __init__(self, name: str, model, manifest: Path, args, **data) -> None:
        self.name, self.rate = name, model.config.speech.token_rate
        self.dm = FlowOmniDataModule(model, DataConfig(train=[str(manifest)], batch_size=args.batch_size, **data))
        self.dm.setup("fit")
        self.loader = self.dm.train_dataloader()
        self.workers = self.dm.config.num_workers
        self.sec = self.items = self.audio = 0.0

    def one_pass(self, timed: bool = True) -> None:
        t, items, audio = time.perf_counter(), 0, 0.0
        for b in self.loader:
            items += b.text.shape[0]
            audio += batch_counts(b, self.rate)[0]
        if timed:
            self.sec, self.items, self.audio = (
                self.sec + time.perf_counter() - t,
                self.items + items,
                self.audio + audio,
            )


def data_table(model, manifest: Path, work: Path, args) -> None:
    cache = str(work / "cache")
    cold = DataRow("cache cold (first pass, writes the cache)", model, manifest, args, cache_dir=cache)
    cold.one_pass()
    cold_stats = str(cold.dm.cache.stats)  # before the fill below
    # One epoch draws one task per entry, so it may not touch every file: fill the rest the way
    # train() does (fitting the token statistics reads every file's mel through the cache).
    for _ in cold.dm.speech_mels(10**6):
        pass
    rows = [
        DataRow("no cache (cache_dir: null)", model, manifest, args, cache_dir=None),
        DataRow("warm cache", model, manifest, args, cache_dir=cache),
        DataRow("warm cache + augmentation (p_augment 1)", model, manifest, args, cache_dir=cache, p_augment=1.0),
    ]
    if args.workers:  # workers pay off only when items are expensive: show both cases
        rows += [
            DataRow(
                f"warm cache, num_workers {args.workers}",
                model,
                manifest,
                args,
                cache_dir=cache,
                num_workers=args.workers,
            ),
            DataRow(
                f"warm cache + augmentation, num_workers {args.workers}",
                model,
                manifest,
                args,
                cache_dir=cache,
                p_augment=1.0,
                num_workers=args.workers,
            ),
        ]
    for row in rows:  # warm-up: imports, first LogMel, worker start-up (workers persist)
        row.one_pass(timed=False)
    for _ in range(args.data_passes):  # round robin, so that load from other processes hits every row alike
        for row in rows:
            row.one_pass()
    base = rows[0].audio / rows[0].sec
    print(f"### Data pipeline ({args.presets[0]} r=4 features, no model step; load {os.getloadavg()[0]:.2f})\n")
    print("| loader | items timed | items/s | audio s/s | vs no cache | cache hits (main process, all passes) |")
    print("|---|---|---|---|---|---|")
    for x in [cold, *rows]:
        stats = cold_stats if x is cold else "in workers" if x.workers else str(x.dm.cache.stats)
        print(
            f"| {x.name} | {x.items:.0f} | {x.items / x.sec:.0f} | {x.audio / x.sec:.0f} | "
            f"{x.audio / x.sec / base:.2f} | {stats} |"
        )
    print(flush=True)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    t_start = time.perf_counter()
    print(
        f"torch {torch.__version__}, lightning {lightning.__version__}, {torch.get_num_threads()} intra-op "
        f"thread(s), load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    work = Path(tempfile.mkdtemp(prefix="flow_omni_bench_train_"))
    try:
        manifest, total = make_manifest(work / "data", args.items)
        print(
            f"manifest: {args.items} entries x (question + answer), {total:.0f} s of audio; "
            f"batch size {args.batch_size}\n"
        )

        # ---- data pipeline (the first preset's r=4 tokenizer/encoder; the cost hardly depends on the model)
        data_table(
            build_model(TrainConfig.from_dict({"model": {"preset": args.presets[0], "r": 4}})), manifest, work, args
        )

        # ---- training
        rows = []
        for preset in args.presets:
            for r in args.rs:
                rows.append(train_row(preset, r, manifest, work, args))
                print(f"done {preset} r={r}", flush=True)
        print(
            f"\n### Training (train() as `flow-omni train` runs it; {args.warmup} warm-up + {args.steps} timed "
            f"steps, batch {args.batch_size}, {args.threads} thread(s))\n"
        )
        print(
            "| preset | r | params (M) | tokens/step | non-pad % | audio s/step | ms/step | in-step ms | CPU ms/step "
            "| audio s/s | tokens/s | load |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for x in rows:
            print(
                f"| {x['preset']} | {x['r']} | {x['params']:.1f} | {x['tok_step']:.0f} | {x['fill']:.0f} "
                f"| {x['audio_step']:.1f} | {x['ms']:.0f} | {x['inside']:.0f} | {x['cpu']:.0f} | {x['audio_s']:.1f} "
                f"| {x['tok_s']:.0f} | {x['load']:.1f} |"
            )
        print(
            "\naudio s/s = seconds of audio (prompt audio + target speech) trained per wall second; "
            "ms/step includes fetching the batch (num_workers 0); CPU ms/step = process CPU time (all threads); "
            "load = 1-min load average when the row finished (rows run one after another, so compare "
            "rows with different load through CPU ms/step)."
        )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nwall time {time.perf_counter() - t_start:.0f} s, load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
