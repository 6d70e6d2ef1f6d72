"""Learning curves: train with the `learn` recipe and score the model at several points of training.

One process trains one variant (continuous flow head, k-means codes, or coarse_fine: a k-means code
refined by the flow head) and, at each step listed in
``--eval-steps`` and at the end, pauses to score the model on held-out data:

* ASR CER / WER of the model's own A→T on test sentences in training voices (clean and babble at
  5 dB) and on sentences in voices unseen in training;
* spoken QA: accuracy of the text answer to spoken questions (A→A);
* TTS (T→A): log-mel L1 to the reference in the output voice; the model's own ASR of what it said
  (CER); Whisper tiny.en's WER on the Griffin-Lim audio, next to Whisper's WER on the reference mel
  resynthesised by the same Griffin-Lim (the ceiling this vocoder allows).

Training time is wall time (steps and data loading) without the scoring pauses; ``--minutes`` caps
it. The first pass over the data also fills the feature cache (the frozen encoder's outputs), a
one-time cost like building the corpus. Results go to
``OUT/<variant>/curve.jsonl`` (one line per scored step; a rerun resumes training from the last
checkpoint and keeps the scored steps). ``--report`` turns every variant's curve into a Markdown
table, a PNG per metric against steps and wall time, and ``benchmarks/results/learning.json``.

    python benchmarks/learning.py --corpus data/learn --out runs/learning --variant continuous
    python benchmarks/learning.py --corpus data/learn --out runs/learning --variant kmeans
    python benchmarks/learning.py --out runs/learning --report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from flow_omni.config import parse_overrides
from flow_omni.data.manifest import read_manifest
from flow_omni.errors import FlowOmniError
from flow_omni.eval.asr import WhisperASR
from flow_omni.eval.robustness import evaluate_model
from flow_omni.precision import fast_bf16_matmul
from flow_omni.training.config import TrainConfig
from flow_omni.training.train import recipe_path, train
from flow_omni.vocoder import GriffinLim

VARIANTS = {
    "continuous": {},
    "kmeans": {"tokens": "kmeans", "quantizer": {"codebook_size": 256}},
    "kmeans1024": {"tokens": "kmeans", "quantizer": {"codebook_size": 1024}},
    "coarse_fine": {"tokens": "coarse_fine", "quantizer": {"codebook_size": 256}},
    "coarse_fine1024": {"tokens": "coarse_fine", "quantizer": {"codebook_size": 1024}},
}
#: (task, condition, metric) → column name, in table order.
COLUMNS = [
    (("asr", "clean", "cer"), "ASR CER clean"),
    (("asr", "unseen_voices", "cer"), "ASR CER unseen voices"),
    (("asr", "babble@5", "cer"), "ASR CER babble 5 dB"),
    (("qa", "clean", "accuracy"), "QA acc (text)"),
    (("tts", "clean", "self_asr_cer"), "TTS own-ASR CER"),
    (("tts", "clean", "whisper_wer"), "TTS Whisper WER"),
    (("tts", "clean", "whisper_wer_ceiling"), "Whisper WER of resynthesis"),
    (("tts", "clean", "whisper_wer_tokens"), "Whisper WER of the reference in the model's codes"),
    (("tts", "clean", "mel_l1"), "TTS mel L1"),
]


def cell(metrics: dict, key: tuple[str, str, str]) -> str:
    """A metric for the table, ``—`` where the variant has none (a continuous model's codes' ceiling)."""
    value = metrics.get("/".join(key))
    return "—" if value is None else f"{value:.3f}"


def test_sets(corpus: Path, items: int):
    """Test sentences (training voices), spoken QA questions, and sentences in unseen voices."""
    test = read_manifest(corpus / "test.jsonl")
    sentences = [e for e in test if not e.answer_text][:items]
    qa = [e for e in test if e.answer_text][:items]
    unseen = [e for e in read_manifest(corpus / "test_unseen_voices.jsonl") if not e.answer_text][:items]
    if not sentences or not qa or not unseen:
        raise FlowOmniError(f"{corpus}: the learning benchmark needs test sentences, QA and unseen-voice sentences")
    return sentences, qa, unseen


class Scorer(Callback):
    """Scores the model at the listed steps and at the end; stops training after ``minutes`` of it."""

    def __init__(self, out: Path, steps: list[int], minutes: float, sets, max_new: int) -> None:
        self.curve = out / "curve.jsonl"
        self.done = (
            {json.loads(line)["step"] for line in self.curve.read_text().splitlines()} if self.curve.exists() else set()
        )
        self.steps, self.limit, self.sets, self.max_new = set(steps), minutes * 60, sets, max_new
        self.train_seconds = self._last("train_seconds", 0.0)
        self.asr = WhisperASR(cpu_threads=1)
        self.vocoder = GriffinLim()
        self.ceiling: dict[str, str] = {}  # the references are transcribed once, not at every score
        self._t = None

    def _last(self, key, default):
        if not self.curve.exists():
            return default
        lines = self.curve.read_text().splitlines()
        return json.loads(lines[-1])[key] if lines else default

    # The training time so far rides in each checkpoint (Lightning keeps a callback's state there), so that
    # a resumed run counts the steps between its last score and its checkpoint; the curve's last line
    # (read in __init__) is the fallback for a checkpoint written before the state was kept.
    def state_dict(self) -> dict:
        return {"train_seconds": self.train_seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.train_seconds = float(state_dict.get("train_seconds", self.train_seconds))

    def on_train_start(self, trainer, pl_module) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Wall time since the last mark: the step and the loading of its batch, not the scoring pauses.
        self.train_seconds += time.perf_counter() - self._t
        step = trainer.global_step
        if step in self.steps and step not in self.done:
            self.score(pl_module.model, step)
        if self.train_seconds > self.limit:
            trainer.should_stop = True
        self._t = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step not in self.done:
            self.score(pl_module.model, trainer.global_step)

    def score(self, model, step: int) -> None:
        sentences, qa, unseen = self.sets
        t0 = time.perf_counter()
        was_training = model.training
        rows = evaluate_model(
            model,
            sentences,
            qa,
            ["clean", "babble@5"],
            unseen=unseen,
            max_new_positions=self.max_new,
            vocoder=self.vocoder.decode,
            external_asr=self.asr,
            speech_answer_conditions=(),
            ceiling_cache=self.ceiling,
        )
        model.train(was_training)
        metrics = {f"{r['task']}/{r['condition']}/{r['metric']}": r["value"] for r in rows}
        line = {
            "step": step,
            "train_seconds": round(self.train_seconds, 1),
            "score_seconds": round(time.perf_counter() - t0, 1),
            "metrics": metrics,
        }
        with self.curve.open("a") as f:
            f.write(json.dumps(line) + "\n")
        self.done.add(step)
        print(
            f"[learning] step {step} ({self.train_seconds / 60:.1f} min): "
            + ", ".join(f"{name} {cell(metrics, k)}" for k, name in COLUMNS),
            flush=True,
        )


def run_variant(args) -> None:
    corpus = Path(args.corpus).resolve()
    out = Path(args.out) / args.variant
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    cfg = TrainConfig.load(recipe_path("learn")).merged(parse_overrides(args.set))
    data = dict(
        cfg.data.to_dict(),
        train=[str(corpus / "train.jsonl")],
        valid=[str(corpus / "valid.jsonl")],
        cache_dir=str(corpus / "feature_cache"),
    )
    model = dict(cfg.model.to_dict(), overrides={**cfg.model.overrides, **VARIANTS[args.variant]})
    cfg = TrainConfig.from_dict(
        dict(
            cfg.to_dict(),
            out_dir=str(out / "run"),
            data=data,
            model=model,
            max_steps=args.max_steps,
            threads=args.threads,
            progress=False,
            val_every_steps=args.max_steps,
            loggers=["csv"],
        )
    ).with_precision_resolved()  # settings.json names the precision trained in, not "auto"
    resume = out / "run" / "checkpoints" / "last.ckpt"
    sets = test_sets(corpus, args.items)
    scorer = Scorer(out, [int(s) for s in args.eval_steps.split(",")], args.minutes, sets, args.max_new)
    (out / "settings.json").write_text(
        json.dumps(
            {
                "variant": args.variant,
                "corpus": str(corpus),
                "items": args.items,
                "minutes": args.minutes,
                "eval_steps": args.eval_steps,
                "train_config": cfg.to_dict(),
            },
            indent=1,
        )
    )
    train(cfg, resume=resume if resume.exists() else None, callbacks=[scorer])


def report(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    curves = {}
    for v in VARIANTS:
        path = out / v / "curve.jsonl"
        if path.exists():
            curves[v] = [json.loads(line) for line in path.read_text().splitlines()]
    if not curves:
        raise FlowOmniError(f"no curve.jsonl under {out}/<variant>/; run the variants first")
    lines = [
        "| variant | step | train min | " + " | ".join(name for _, name in COLUMNS) + " |",
        "|---|---|---|" + "---|" * len(COLUMNS),
    ]
    for v, rows in curves.items():
        for r in rows:
            cells = [cell(r["metrics"], k) for k, _ in COLUMNS]
            lines.append(f"| {v} | {r['step']} | {r['train_seconds'] / 60:.1f} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    (out / "learning.md").write_text(table + "\n")
    for key, name in COLUMNS:
        if not any("/".join(key) in r["metrics"] for rows in curves.values() for r in rows):
            continue  # e.g. the codes' ceiling in a run of continuous models only
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for v, rows in curves.items():
            ys = [r["metrics"].get("/".join(key), float("nan")) for r in rows]
            axes[0].plot([r["step"] for r in rows], ys, marker="o", label=v)
            axes[1].plot([r["train_seconds"] / 60 for r in rows], ys, marker="o", label=v)
        axes[0].set_xlabel("training step")
        axes[1].set_xlabel("training wall time (min, one thread)")
        for ax in axes:
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(name)
        fig.tight_layout()
        fig.savefig(out / f"learning_{'_'.join(key).replace('@', '')}.png", dpi=100)
        plt.close(fig)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    settings = {v: json.loads((out / v / "settings.json").read_text()) for v in curves}
    result = {
        "commit": commit,
        "machine": {
            "arch": platform.machine(),
            "cpus": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_matmul_native": fast_bf16_matmul("cpu"),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "settings": {v: {k: s[k] for k in ("corpus", "items", "minutes", "eval_steps")} for v, s in settings.items()},
        "recipe": {v: s["train_config"] for v, s in settings.items()},
        "note": args.note,
        "curves": curves,
    }
    dest = Path(args.json)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=1) + "\n")
    for png in out.glob("learning_*.png"):  # the plots beside the JSON, for the README
        (dest.parent / dest.stem).mkdir(exist_ok=True)
        (dest.parent / dest.stem / png.name).write_bytes(png.read_bytes())
    print(f"\ntable: {out / 'learning.md'}\nplots: {out}/learning_*.png (copied to {dest.parent / dest.stem})")
    print(f"results: {dest}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--corpus", default="data/learn", help="corpus folder (flow-omni corpus)")
    p.add_argument("--out", default="runs/learning")
    p.add_argument("--variant", choices=sorted(VARIANTS))
    p.add_argument("--report", action="store_true", help="write the table, plots and JSON from the curves so far")
    p.add_argument("--json", default="benchmarks/results/learning.json")
    p.add_argument("--minutes", type=float, default=60.0, help="cap on training wall time (scoring excluded)")
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--eval-steps", default="250,500,1000,2000", help="steps to score at (and at the end)")
    p.add_argument("--items", type=int, default=16, help="test items per set")
    p.add_argument("--max-new", type=int, default=300, help="generated positions at most")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--note", default="", help="--report: how the runs were made (stored in the JSON)")
    p.add_argument("--set", nargs="*", default=[], help="recipe overrides key.sub=value")
    args = p.parse_args(argv)
    if args.report:
        report(args)
    elif args.variant:
        run_variant(args)
    else:
        p.error("give --variant NAME or --report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
