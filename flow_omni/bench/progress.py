"""What the benchmark shows while it runs: its stages with an overall time left, and runs training elsewhere.

:func:`benchmark_stages` lists the stages of one :func:`~flow_omni.bench.robustness.run_robustness`
call with their expected durations, from the work each holds (WAVs to synthesise, files to encode,
steps to train, prompts to generate) times the cost of one unit measured here. The reporter
(:mod:`flow_omni.stages`) scales them by how this machine does on the finished stages.

:class:`RunWatch` follows runs that train in worker processes, which print nothing themselves: it reads
the step each run has logged (``train_log.jsonl``) into one step bar (:func:`flow_omni.stages.step_bar`)
and says when a run has trained and when it has been scored.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from flow_omni.bench.cache import run_dir
from flow_omni.bench.config import RobustnessConfig, VariantSpec
from flow_omni.data.corpus import CorpusConfig, make_plan
from flow_omni.precision import fast_bf16_matmul
from flow_omni.stages import Stage, StageReporter, step_bar

#: Seconds per unit of work, measured by ``make demo`` on a fresh clone of 7edd91e with nothing else running
#: (2 cores; the two runs side by side, one thread each; 12 min 57 s in all). A run's training is a fixed
#: cost plus a cost per item; the fixed costs are the earlier fit's (two demos under load), scaled by how
#: much faster the idle demo's flow-head run was (517 s against 1188 s). Only the first estimate of the
#: time left: the reporter rescales it by the stages measured since.
SYNTH_S_PER_WAV = 0.0115  # espeak-ng synthesis: 4,362 corpus WAVs in 50 s
#: the frozen Whisper encoder: one process on 2 threads read the demo's 1,955 training inputs in 153 s; two
#: worker processes of one thread each (what the features stage runs with jobs = 2) took 131 s, so 0.134 s a
#: file on one thread, which is also what a run training on one thread pays for an input it encodes itself
ENCODE_S_PER_FILE = 0.078
ENCODE_S_PER_FILE_ONE_THREAD = 0.134
#: training, learn recipe: 500 steps x 16 items in 517 s (flow head, the slower of the two; k-means 406 s)
TRAIN_SETUP_S, TRAIN_S_PER_SAMPLE = 28.0, 0.061
#: A training item's cost under a precision, relative to float32, on a CPU with native bf16: one
#: learn-recipe step took 766 ms in bf16-mixed autocast against 1,339 ms in float32 (medians over the
#: same batches, one thread, idle; benchmarks/training_precision.py, continuous variant). Elsewhere
#: bf16-mixed is emulated at float32 speed (flow_omni.emulated_bf16): 1.
PRECISION_TRAIN_FACTOR = {"bf16-mixed": 0.57}
#: scoring: 136 prompts of 200 positions at most in 49 s (flow head) and 75 s (k-means, beside a training)
EVAL_SETUP_S, EVAL_S_PER_POSITION = 23.0, 0.0019
LATENCY_S_PER_RUN = 2.0  # streaming TTS timed on 3 prompts: 2 runs in 4 s
REPORT_S = 1.0  # results, 6 plots and report.md

#: Seconds between the lines that say how far the runs are, when no progress bar shows it.
HEARTBEAT_S = 60.0


def corpus_size(cfg: RobustnessConfig) -> tuple[int, int]:
    """(WAVs the corpus build makes, training and validation inputs the encoder reads), from its plan."""
    plan = make_plan(CorpusConfig.from_dict(cfg.corpus_config))
    inputs = {e.main.uid for e in plan.entries if e.split in ("train", "valid")}
    return len(plan.utterances), len(inputs)


def eval_positions(cfg: RobustnessConfig) -> int:
    """Generated positions, at most, of scoring one run: every prompt of every task and condition."""
    conditions = len(cfg.conditions())
    prompts = 0
    if "asr" in cfg.tasks:
        prompts += cfg.max_items * (conditions + int(cfg.unseen_voices))
    if "tts" in cfg.tasks:
        prompts += 2 * cfg.max_items  # speaking, then the model's own ASR of what it said
    if "qa" in cfg.tasks:
        prompts += cfg.max_items * conditions
    return prompts * cfg.max_new_positions


def encode_seconds_per_file(jobs: int) -> float:
    """The features stage's cost per input file: one process, or ``jobs`` worker processes of one thread."""
    return ENCODE_S_PER_FILE if jobs <= 1 else ENCODE_S_PER_FILE_ONE_THREAD / jobs


def train_item_seconds(precision: str) -> float:
    """The cost of one training item under a Lightning ``precision`` on this machine's CPU."""
    return TRAIN_S_PER_SAMPLE * (PRECISION_TRAIN_FACTOR.get(precision, 1.0) if fast_bf16_matmul("cpu") else 1.0)


def run_seconds(cfg: RobustnessConfig, steps: int, batch_size: int, precision: str) -> tuple[float, float]:
    """What one run is expected to take: (training ``steps`` of ``batch_size`` items, scoring), in seconds."""
    train_s = TRAIN_SETUP_S + steps * batch_size * train_item_seconds(precision)
    return train_s, EVAL_SETUP_S + eval_positions(cfg) * EVAL_S_PER_POSITION


def finetune_seconds(cfg: RobustnessConfig, steps: int, batch_size: int, precision: str, p_augment: float) -> float:
    """What the noisy-domain fine-tune of one run is expected to take, with its scoring, in seconds (0 for a
    run that is not fine-tuned). Its inputs are augmented on the fly (``p_augment`` of them), so a frozen
    encoder reads them again: each such item costs an encoding on top of a training item."""
    ft_steps = max(1, round(cfg.finetune_share * steps))
    item_s = train_item_seconds(precision) + p_augment * ENCODE_S_PER_FILE_ONE_THREAD
    train_s = TRAIN_SETUP_S + ft_steps * batch_size * item_s
    return train_s + run_seconds(cfg, steps, batch_size, precision)[1]


def benchmark_stages(
    cfg: RobustnessConfig,
    todo: list[tuple[VariantSpec, int]],
    *,
    steps: int,
    batch_size: int,
    jobs: int,
    wavs: int,
    inputs: int,
    precision: str = "32-true",
    finetune_s: float = 0.0,
) -> list[Stage]:
    """The stages of a benchmark call with ``todo`` runs to train or score, ``jobs`` at a time, a corpus of
    ``wavs`` WAVs to build and ``inputs`` files to encode (0 when there is nothing to do); a run of a
    variant in ``cfg.tuned_variants()`` is then fine-tuned and scored again, in ``finetune_s``."""
    train_s, eval_s = run_seconds(cfg, steps, batch_size, precision)
    tuned = [(v, s) for v, s in todo if v.name in cfg.tuned_variants()]
    stages = [
        Stage("corpus", "corpus", wavs * SYNTH_S_PER_WAV),
        Stage("features", "speech encoder features", inputs * encode_seconds_per_file(cfg.jobs)),
    ]
    if jobs > 1:
        rounds = math.ceil(len(todo) / jobs)
        label = f"training and scoring {len(todo)} runs, {jobs} side by side"
        if tuned:
            label += f", {len(tuned)} of them fine-tuned on noisy inputs and scored again"
        stages.append(Stage("runs", label, rounds * (train_s + eval_s) + len(tuned) * finetune_s / jobs))
    else:
        for k, (v, s) in enumerate(todo, 1):
            name = f"{v.name}-seed{s}"
            stages.append(Stage(f"train {name}", f"training {k}/{len(todo)}: {name}", train_s, kind="train"))
            score_s, what = eval_s, "scoring"
            if (v, s) in tuned:  # the fine-tune and its scoring follow the run's scoring in the same stage
                score_s, what = eval_s + finetune_s, "scoring, fine-tuning on noisy inputs and scoring again"
            stages.append(Stage(f"score {name}", f"{what} {k}/{len(todo)}: {name}", score_s, kind="score"))
    runs = len(cfg.variants) * len(cfg.seeds)
    if "tts" in cfg.tasks:
        stages.append(Stage("latency", f"streaming latency of {runs} runs, one at a time", runs * LATENCY_S_PER_RUN))
    stages.append(Stage("report", "report", REPORT_S))
    return stages


def logged_steps(path: Path) -> int:
    """Optimiser steps a run has taken, from the last whole line of its ``train_log.jsonl`` (0 before any)."""
    try:
        with open(path, "rb") as fh:
            start = max(0, fh.seek(0, 2) - 4096)
            fh.seek(start)
            lines = fh.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return 0
    for line in reversed(lines[1:] if start else lines):  # from the middle of the file, the first is cut
        try:  # the last line may still be being written
            return int(json.loads(line)["step"]) + 1
        except (ValueError, KeyError, TypeError):
            continue
    return 0


class RunWatch:
    """Follows runs in worker processes: their summed steps on one bar, and a line as each trains and scores.

    Without a bar (``progress=False``) a line every :data:`HEARTBEAT_S` seconds gives the steps instead.
    """

    def __init__(
        self,
        cfg: RobustnessConfig,
        todo: list[tuple[VariantSpec, int]],
        steps: int,
        stages: StageReporter,
        *,
        progress: bool,
        train_share: float,
        clock=time.monotonic,
    ) -> None:
        self.runs = {f"{v.name}-seed{s}": run_dir(cfg, v, s) for v, s in todo}
        self.steps = steps
        self.stages = stages
        self.train_share = train_share
        self.clock = clock
        self.trained: set[str] = set()
        self.scored: set[str] = set()
        self.done_steps = {name: 0 for name in self.runs}
        self.bar = step_bar(steps * len(self.runs), desc=f"train ({len(self.runs)} runs)", disable=not progress)
        self.heartbeat = None if progress else clock()

    def steps_done(self) -> int:
        """Steps taken by all runs together."""
        return sum(self.done_steps.values())

    def fraction(self) -> float:
        """How far the runs stage is: training counted by steps, scoring by runs done."""
        trained = sum(min(n, self.steps) for n in self.done_steps.values()) / (self.steps * len(self.runs))
        return self.train_share * trained + (1.0 - self.train_share) * len(self.scored) / len(self.runs)

    def poll(self) -> None:
        for name, run in self.runs.items():
            if name in self.trained:
                continue
            self.done_steps[name] = logged_steps(run / "train_log.jsonl")
            if (run / "model" / "model.safetensors").is_file():
                self.done_steps[name] = self.steps
                self.trained.add(name)
                self.stages.note(f"{name} trained; scoring it", self.fraction())
        self.bar.update(self.steps_done() - self.bar.n)
        training = len(self.trained) < len(self.runs)
        if training and self.heartbeat is not None and self.clock() - self.heartbeat >= HEARTBEAT_S:
            self.heartbeat = self.clock()
            runs = len(self.runs)
            self.stages.note(f"training: {self.steps_done()}/{self.steps * runs} steps of {runs} runs", self.fraction())

    def scored_run(self, name: str) -> None:
        self.trained.add(name)
        self.done_steps[name] = self.steps
        self.scored.add(name)
        self.stages.note(f"{name} scored ({len(self.scored)}/{len(self.runs)} runs done)", self.fraction())

    def close(self) -> None:
        self.bar.close()
