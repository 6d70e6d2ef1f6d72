"""The robustness benchmark: continuous vs discrete speech tokens, trained and tested on equal terms.

Every *variant* (continuous flow head, k-means codes, RVQ codes with per-level delay, a low-rate
single codebook, …) is the same tiny backbone, layout, data, mel space and vocoder; only the speech
stream differs. Each variant is trained with the same budget on the same corpus for every seed, then
scored under listening conditions:

* **ASR** (input robustness): the model's own A→T on the test utterances, clean, with white / pink /
  babble noise at each SNR, pitch and rate changes, and voices unseen in training → CER, WER;
* **TTS** (output quality, clean text in): greedy T→A → log-mel distance and mel-cepstral distortion
  against the reference recording, and the model's own ASR of what it said (CER);
* **spoken QA** (speech in, text + speech out): A→A on the QA test questions under the same
  conditions → answer accuracy of the text stream;
* **latency**: time to the first streamed mel chunk and real-time factor of greedy T→A, timed after
  the other tasks, one model at a time.

Results are kept per seed and reported as mean ± std over seeds: ``report.md``, ``results.json``,
``results.csv``, PNG plots of each metric against SNR (one line per variant), and sample WAVs per
condition. :func:`evaluate_model` scores one model (e.g. a user's checkpoint) on any manifests.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from flow_omni.audio.io import load_audio, save_audio
from flow_omni.checkpoint import atomic_write_text
from flow_omni.config import Config
from flow_omni.data.manifest import ManifestEntry, read_manifest
from flow_omni.data.texts import score_answer
from flow_omni.errors import ConfigError
from flow_omni.eval.audio_metrics import mel_cepstral_distortion, mel_distance
from flow_omni.eval.heldout import apply_condition, condition_seed, evaluate_asr, parse_condition
from flow_omni.eval.text_metrics import cer, wer
from flow_omni.layout import Sample
from flow_omni.vocoder import load_vocoder

TASKS = ("asr", "tts", "qa")
UNSEEN = "unseen_voices"


@dataclasses.dataclass
class VariantSpec(Config):
    """One speech tokenisation to compare (FlowOmniConfig fields that differ between variants)."""

    name: str
    tokens: str = "continuous"  # continuous | kmeans | rvq
    quantizer: dict | None = None
    r: int = 4
    preset: str = "tiny"

    def model_overrides(self) -> dict:
        return {} if self.tokens == "continuous" else {"tokens": self.tokens, "quantizer": dict(self.quantizer or {})}


def default_variants() -> list[VariantSpec]:
    return [
        VariantSpec("continuous"),
        VariantSpec("kmeans", tokens="kmeans", quantizer={"codebook_size": 256}),
        VariantSpec("rvq4", tokens="rvq", quantizer={"codebook_size": 256, "num_levels": 4}),
        VariantSpec("kmeans_lowrate_r8", tokens="kmeans", quantizer={"codebook_size": 256}, r=8),
    ]


@dataclasses.dataclass
class RobustnessConfig(Config):
    out_dir: str = "bench_robustness"
    corpus: str = "data/synth"  # a flow-omni corpus folder; built here if missing
    corpus_config: dict = dataclasses.field(default_factory=dict)  # CorpusConfig overrides for that build
    variants: list[VariantSpec] = dataclasses.field(default_factory=default_variants)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    #: TrainConfig overrides shared by every variant and seed (the equal budget)
    train: dict = dataclasses.field(default_factory=lambda: {
        "max_steps": 1500, "data": {"batch_size": 8}, "optim": {"lr": 2e-3, "warmup_steps": 50}})
    noise_kinds: list[str] = dataclasses.field(default_factory=lambda: ["white", "pink", "babble"])
    snrs: list[float] = dataclasses.field(default_factory=lambda: [20.0, 10.0, 5.0, 0.0])
    other_conditions: list[str] = dataclasses.field(
        default_factory=lambda: ["pitch@3", "pitch@-3", "speed@1.15", "speed@0.85"])
    unseen_voices: bool = True
    tasks: list[str] = dataclasses.field(default_factory=lambda: list(TASKS))
    max_items: int = 24  # test utterances (and QA questions) per condition
    max_new_positions: int = 300
    sample_wavs: int = 1  # example inputs/outputs written per condition (first seed)
    vocoder: str | None = None  # a Vocos checkpoint folder for the sample WAVs; None = Griffin-Lim
    #: also score TTS and spoken QA answers by Whisper tiny.en (flow_omni[eval]) on the vocoded output,
    #: when installed; the spoken answers only under these conditions (Whisper costs ~1 s per answer)
    external_asr: bool = True
    speech_answer_conditions: list[str] = dataclasses.field(default_factory=lambda: ["clean"])
    threads: int | None = None  # torch threads per run; None = all cores split evenly between `jobs`
    #: (variant, seed) runs trained and scored side by side in separate processes; each finished run's
    #: scores are kept in ``runs/<variant>-seed<k>/eval.json`` so a rerun (or an interrupted run) reuses them
    jobs: int = 1

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ConfigError(f"RobustnessConfig.jobs must be >= 1, got {self.jobs}")
        bad = sorted(set(self.tasks) - set(TASKS))
        if bad:
            raise ConfigError(f"RobustnessConfig.tasks: unknown {bad}; valid: {list(TASKS)}")
        if not self.variants or not self.seeds:
            raise ConfigError("RobustnessConfig: at least one variant and one seed are needed")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ConfigError(f"RobustnessConfig.variants: names must be unique, got {names}")
        for c in self.conditions():
            parse_condition(c)

    @classmethod
    def demo(cls, out_dir: str = "demo_out") -> "RobustnessConfig":
        """``make demo``: the benchmark reduced to fit ~15 minutes on 2 CPU cores.

        A default-seed corpus with more short spoken questions than long sentences, the continuous
        variant against one discrete variant (k-means, K = 256, same r), one seed, 300 training steps
        each, and the conditions clean / white and babble noise at 10 and 0 dB / pitch +3 / unseen voices.
        """
        return cls(
            out_dir=out_dir, corpus=f"{out_dir}/corpus",
            corpus_config={"n_sentences": 120, "n_qa": 240, "n_interleaved": 0},
            variants=[VariantSpec("continuous"),
                      VariantSpec("kmeans", tokens="kmeans", quantizer={"codebook_size": 256})],
            seeds=[0], train={"max_steps": 300, "data": {"batch_size": 8},
                              "optim": {"lr": 2e-3, "warmup_steps": 30}},
            noise_kinds=["white", "babble"], snrs=[10.0, 0.0], other_conditions=["pitch@3"],
            max_items=8, max_new_positions=200)

    def conditions(self) -> list[str]:
        """Input conditions for ASR and QA, clean first."""
        noisy = [f"{k}@{s:g}" for k in self.noise_kinds for s in self.snrs]
        return ["clean"] + noisy + list(self.other_conditions)


# ----------------------------------------------------------------------------------- scoring
def _rows(variant: str, seed: int, task: str, condition: str, metrics: dict[str, float], n: int) -> list[dict]:
    return [{"variant": variant, "seed": seed, "task": task, "condition": condition, "metric": k, "value": float(v),
             "n": n} for k, v in metrics.items()]


def _generate(model, prompts: list[Sample], max_new: int, batch_size: int = 8):
    out = []
    for i in range(0, len(prompts), batch_size):
        out += model.generate(prompts[i:i + batch_size], text_temperature=0.0, speech_temperature=0.0,
                              max_new_positions=max_new, seed=0)
    return out


@torch.no_grad()
def evaluate_model(model, test: Sequence[ManifestEntry], qa: Sequence[ManifestEntry], conditions: Sequence[str], *,
                   unseen: Sequence[ManifestEntry] = (), tasks: Sequence[str] = TASKS, max_new_positions: int = 300,
                   label: tuple[str, int] = ("model", 0), wav_dir: Path | None = None,
                   sample_wavs: int = 0, vocoder=None, external_asr=None,
                   speech_answer_conditions: Sequence[str] = ("clean",), progress: bool = False) -> list[dict]:
    """Score one model; returns long-format rows ``{variant, seed, task, condition, metric, value, n}``.

    With ``wav_dir``, the first ``sample_wavs`` inputs of every condition are written as heard, and the
    speech the model produced (TTS outputs, QA answers) is vocoded with ``vocoder`` (a callable
    mel ``(n_mels, F)`` → audio; Griffin-Lim when None) — the same vocoder for every variant.
    """
    model.eval()
    if (external_asr is not None or (wav_dir is not None and sample_wavs)) and vocoder is None:
        vocoder = load_vocoder(None).decode
    variant, seed = label
    rows: list[dict] = []
    sr = model.config.speech.mel.sample_rate
    test_audio = [load_audio(e.audio) for e in test]
    qa_audio = [load_audio(e.audio) for e in qa]
    bar = tqdm(total=len(conditions) * (("asr" in tasks) + ("qa" in tasks)) + ("tts" in tasks) + bool(unseen),
               desc=f"eval {variant}/{seed}", disable=not progress, leave=False)

    def heard(entries, audios, cond):
        return [apply_condition(a, cond, condition_seed(e.id, cond, 0), sr) for e, a in zip(entries, audios)]

    def asr(entries, audios, cond, name):
        res = evaluate_asr(model, entries, audios, cond, max_new_positions=max_new_positions)
        rows.extend(_rows(variant, seed, "asr", name, {"cer": res.cer, "wer": res.wer}, res.n))
        if wav_dir is not None and sample_wavs:
            k = sample_wavs
            for e, a in zip(entries[:k], heard(entries[:k], audios[:k], cond)):
                save_audio(wav_dir / f"input_{name.replace('@', '_')}_{e.id}.wav", a, sr)

    if "asr" in tasks and test:
        for cond in conditions:
            asr(test, test_audio, cond, cond)
            bar.update()
        if unseen:
            asr(unseen, [load_audio(e.audio) for e in unseen], "clean", UNSEEN)
            bar.update()
    if "tts" in tasks and test:
        out = _generate(model, [Sample("T2A", prompt_text=e.text) for e in test], max_new_positions)
        dists, mcds, spoke, said, refs, heard_text = [], [], 0, [], [], []
        for e, a, g in zip(test, test_audio, out):
            ref = model.speech_tokenizer.mel(a)
            if g.mel is None or g.mel.shape[-1] == 0:
                dists.append(mel_distance(torch.full_like(ref, -math.inf), ref))  # silence vs the reference
                continue
            spoke += 1
            dists.append(mel_distance(g.mel, ref))
            mcds.append(mel_cepstral_distortion(g.mel, ref, align="dtw"))
            if external_asr is not None:  # intelligibility to a listener that never saw our data
                heard_text.append((e.text, external_asr.transcribe(vocoder(g.mel), sr)))
            # Intelligibility by the model's own ASR, on the generated mel tokens (no vocoder in the loop).
            said.append(Sample("A2T", prompt_audio=g.speech_tokens if model.config.encoder.kind == "conv"
                               else model.prepare_audio(a)))
            refs.append(e.text)
            if wav_dir is not None and sample_wavs and spoke <= sample_wavs:
                save_audio(wav_dir / f"tts_output_{e.id}.wav", vocoder(g.mel), sr)
        metrics = {"mel_l1": float(np.mean(dists)), "spoke": spoke / len(test)}
        if mcds:
            metrics["mcd_db"] = float(np.mean(mcds))
        if heard_text:
            metrics["whisper_wer"] = wer([r for r, _ in heard_text], [h for _, h in heard_text])
        if said and model.config.encoder.kind == "conv":
            hyps = [g.text for g in _generate(model, said, max_new_positions)]
            metrics["self_asr_cer"] = cer(refs, hyps)
        rows.extend(_rows(variant, seed, "tts", "clean", metrics, len(test)))
        bar.update()
    if "qa" in tasks and qa:
        for cond in conditions:
            noisy = heard(qa, qa_audio, cond)
            out = _generate(model, [Sample("A2A", prompt_audio=model.prepare_audio(a)) for a in noisy], max_new_positions)
            metrics = {"accuracy": float(np.mean([score_answer(g.text, e.answer_text) for e, g in zip(qa, out)]))}
            if external_asr is not None and cond in speech_answer_conditions:
                # The spoken answer, as a listener hears it: vocoded, transcribed by Whisper, then scored.
                # A silent answer counts as wrong.
                heard_answers = [external_asr.transcribe(vocoder(g.mel), sr) if g.mel is not None and g.mel.shape[-1]
                                 else "" for g in out]
                metrics["speech_accuracy"] = float(np.mean([score_answer(h, e.answer_text)
                                                            for e, h in zip(qa, heard_answers)]))
            rows.extend(_rows(variant, seed, "qa", cond, metrics, len(qa)))
            if wav_dir is not None and sample_wavs:
                name = cond.replace("@", "_")
                for e, a, g in list(zip(qa, noisy, out))[:sample_wavs]:
                    save_audio(wav_dir / f"qa_question_{name}_{e.id}.wav", a, sr)
                    if g.mel is not None and g.mel.shape[-1]:
                        save_audio(wav_dir / f"qa_answer_{name}_{e.id}.wav", vocoder(g.mel), sr)
            bar.update()
    bar.close()
    return rows


# ------------------------------------------------------------------------------ aggregation
def aggregate(rows: Sequence[dict]) -> list[dict]:
    """Mean ± std over seeds for every (variant, task, condition, metric)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        groups[(r["variant"], r["task"], r["condition"], r["metric"])].append(r["value"])
    out = []
    for (v, t, c, m), vals in groups.items():
        arr = np.asarray(vals, dtype=float)
        out.append({"variant": v, "task": t, "condition": c, "metric": m, "mean": float(arr.mean()),
                    "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "seeds": len(arr)})
    return out


# ----------------------------------------------------------------------------------- runner
def ensure_corpus(cfg: RobustnessConfig, progress: bool = True) -> Path:
    """The corpus folder, built with ``corpus_config`` if it has no manifests yet."""
    root = Path(cfg.corpus)
    if not (root / "train.jsonl").is_file():
        from flow_omni.data.corpus import CorpusConfig, build_corpus

        build_corpus(CorpusConfig.from_dict(cfg.corpus_config), root, progress=progress)
    return root


def train_variant(cfg: RobustnessConfig, variant: VariantSpec, seed: int, corpus: Path, progress: bool = True) -> Path:
    """Train one variant with the shared budget; reuses a finished run (the benchmark can be resumed)."""
    from flow_omni.training.config import TrainConfig
    from flow_omni.training.train import train

    out = Path(cfg.out_dir) / "runs" / f"{variant.name}-seed{seed}"
    if (out / "model" / "model.safetensors").is_file():
        return out / "model"
    base = {
        "out_dir": str(out), "seed": seed, "progress": progress, "loggers": ["csv"], "threads": cfg.threads,
        "model": {"preset": variant.preset, "r": variant.r, "overrides": variant.model_overrides()},
        "data": {"train": [str(corpus / "train.jsonl")], "valid": [str(corpus / "valid.jsonl")]},
        "val_every_steps": 10**9, "checkpoint_every_steps": 500,
    }
    config = TrainConfig.from_dict(base).merged(cfg.train)
    # The benchmark measures on test sets; no validation, to save time.
    train(config.merged({"data": {"valid": []}}), resume="auto")
    return out / "model"


def run_robustness(cfg: RobustnessConfig, *, progress: bool = True) -> Path:
    """Train every variant for every seed, evaluate, and write the report; returns ``report.md``.

    Runs whose scores are already on disk for the same evaluation settings are reused, so an
    interrupted benchmark resumes; with ``cfg.jobs > 1`` the remaining runs go to worker processes.
    """
    from flow_omni.eval.report import write_robustness_report

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
    corpus = ensure_corpus(cfg, progress)
    test, qa, unseen = _test_sets(cfg, corpus)
    if cfg.threads:  # this process scores (jobs = 1) and times latency; workers set their own
        torch.set_num_threads(cfg.threads)
    runs = [(v, s) for v in cfg.variants for s in cfg.seeds]
    done: dict[tuple[str, int], tuple[list[dict], dict]] = {}
    todo = []
    for v, s in runs:
        cached = _cached_run(cfg, v, s)
        if cached is not None:
            done[(v.name, s)] = cached
        else:
            todo.append((v, s))

    jobs = min(cfg.jobs, len(todo))
    if jobs > 1:
        from concurrent.futures import as_completed

        threads = cfg.threads or max(1, (torch.get_num_threads() or 1) // jobs)
        worker_cfg = cfg.merged({"threads": threads}).to_dict()
        with worker_pool(jobs) as pool:
            futures = {pool.submit(_run_in_worker, worker_cfg, v.to_dict(), s, str(corpus)): (v, s) for v, s in todo}
            for fut in tqdm(as_completed(futures), total=len(futures), desc=f"runs ({jobs} jobs)",
                            disable=not progress):
                v, s = futures[fut]
                try:
                    done[(v.name, s)] = fut.result()
                except Exception as exc:
                    # Fail now, not after every queued run: finished runs are kept in their folders,
                    # and workers still running stop with this process.
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise RuntimeError(f"benchmark run {v.name}/seed{s} failed: {exc}") from exc
    else:
        asr, vocoder = _scorers(cfg)
        for v, s in todo:
            done[(v.name, s)] = run_one(cfg, v, s, corpus, (test, qa, unseen), asr=asr, vocoder=vocoder,
                                        progress=progress)
    latency: dict[tuple[str, int], list[dict]] = {}
    if "tts" in cfg.tasks and test:
        # After the pool has closed, one run at a time: streaming latency is wall-clock and must not
        # be measured while other runs share the cores.
        for v, s in tqdm(runs, desc="latency", disable=not progress):
            latency[(v.name, s)] = run_latency(cfg, v, s, test[:LATENCY_PROMPTS])
    rows = [r for v, s in runs for r in done[(v.name, s)][0] + latency.get((v.name, s), [])]
    timings = {f"{v.name}/seed{s}": done[(v.name, s)][1] for v, s in runs}
    _write_raw(out, rows, timings)
    return write_robustness_report(out, cfg, rows, aggregate(rows), timings,
                                   {"test": len(test), "qa": len(qa), "unseen": len(unseen)})


def _test_sets(cfg: RobustnessConfig, corpus: Path):
    test_all = read_manifest(corpus / "test.jsonl")
    test = [e for e in test_all if not e.answer_text][: cfg.max_items]
    qa = [e for e in test_all if e.answer_text][: cfg.max_items]
    unseen = read_manifest(corpus / "test_unseen_voices.jsonl")[: cfg.max_items] if cfg.unseen_voices else []
    return test, qa, unseen


def _scorers(cfg: RobustnessConfig):
    """(external ASR or None, vocoder function or None = Griffin-Lim) for scoring and sample WAVs."""
    vocoder = asr = None
    if cfg.vocoder:
        vocoder = load_vocoder(cfg.vocoder).decode
    if cfg.external_asr and ("tts" in cfg.tasks or "qa" in cfg.tasks):
        from flow_omni.eval.asr import WhisperASR

        asr = WhisperASR() if WhisperASR.available() else None
    return asr, vocoder


def _weights_stamp(model_dir: Path) -> list[int]:
    st = (model_dir / "model.safetensors").stat()
    return [st.st_size, st.st_mtime_ns]


def _eval_key(cfg: RobustnessConfig, model_dir: Path) -> dict:
    """Everything a run's scores depend on besides the model weights (identified by size and mtime)."""
    from flow_omni.eval.asr import WhisperASR

    return {"weights": _weights_stamp(model_dir), "corpus": str(Path(cfg.corpus).resolve()),
            "conditions": cfg.conditions(), "unseen_voices": cfg.unseen_voices, "tasks": list(cfg.tasks),
            "max_items": cfg.max_items, "max_new_positions": cfg.max_new_positions,
            "sample_wavs": cfg.sample_wavs, "vocoder": cfg.vocoder,
            "external_asr": bool(cfg.external_asr and WhisperASR.available()),
            "speech_answer_conditions": list(cfg.speech_answer_conditions)}


def _run_dir(cfg: RobustnessConfig, variant: VariantSpec, seed: int) -> Path:
    return Path(cfg.out_dir) / "runs" / f"{variant.name}-seed{seed}"


def _cached_run(cfg: RobustnessConfig, variant: VariantSpec, seed: int) -> tuple[list[dict], dict] | None:
    run = _run_dir(cfg, variant, seed)
    path, model_dir = run / "eval.json", run / "model"
    if not (model_dir / "model.safetensors").is_file():
        return None
    data = _read_keyed(path, _eval_key(cfg, model_dir))
    return None if data is None else (data["rows"], data["timing"])


def _read_keyed(path: Path, key: dict) -> dict | None:
    """A JSON file written with ``{"key": key, ...}``, or None when missing, unreadable or for another key."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # written atomically, so a damaged file is foreign: compute again
    return data if data.get("key") == json.loads(json.dumps(key)) else None  # JSON round trip: tuples → lists


def run_one(cfg: RobustnessConfig, variant: VariantSpec, seed: int, corpus: Path, sets, *, asr=None, vocoder=None,
            progress: bool = True) -> tuple[list[dict], dict]:
    """Train (or reuse) one variant for one seed and score it; keeps the scores in the run folder."""
    from flow_omni.models.flow_omni import FlowOmni

    run = _run_dir(cfg, variant, seed)
    trained_before = (run / "model" / "model.safetensors").is_file()
    t0 = time.perf_counter()
    model_dir = train_variant(cfg, variant, seed, corpus, progress)
    train_s = time.perf_counter() - t0
    if trained_before and (run / "train_time.json").is_file():
        train_s = json.loads((run / "train_time.json").read_text())["train_s"]
    else:
        atomic_write_text(run / "train_time.json", json.dumps({"train_s": train_s}))
    t1 = time.perf_counter()
    model = FlowOmni.from_pretrained(model_dir)
    wav_dir = Path(cfg.out_dir) / "wavs" / variant.name if seed == cfg.seeds[0] and cfg.sample_wavs else None
    if wav_dir is not None:
        wav_dir.mkdir(parents=True, exist_ok=True)
    test, qa, unseen = sets
    rows = evaluate_model(model, test, qa, cfg.conditions(), unseen=unseen, tasks=cfg.tasks,
                          max_new_positions=cfg.max_new_positions, label=(variant.name, seed),
                          wav_dir=wav_dir, sample_wavs=cfg.sample_wavs, vocoder=vocoder,
                          external_asr=asr, speech_answer_conditions=cfg.speech_answer_conditions,
                          progress=progress)
    timing = {"train_s": train_s, "eval_s": time.perf_counter() - t1, "parameters": model.num_parameters()}
    atomic_write_text(run / "eval.json", json.dumps({"key": _eval_key(cfg, model_dir), "rows": rows,
                                                      "timing": timing}, indent=1))
    return rows, timing


def worker_pool(jobs: int):
    """Processes for benchmark runs: spawned (forking a process whose torch thread pools already ran
    can deadlock) and stopping when this process dies, so a killed benchmark leaves no orphans training on."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))


def _exit_with_parent(parent: int) -> None:
    """Worker initialiser: stop when the benchmark process is gone (killed), instead of training on as an orphan."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


LATENCY_PROMPTS = 3  # TTS prompts timed per run; the median is reported


def run_latency(cfg: RobustnessConfig, variant: VariantSpec, seed: int, test: Sequence[ManifestEntry]) -> list[dict]:
    """Streaming TTS latency of one trained run: median time to the first mel chunk and real-time factor.

    Generation only (greedy, no vocoder: the vocoder is the same for every variant); the first prompt is
    also run once untimed. Kept in ``runs/<run>/latency.json`` for the same weights, prompts and threads.
    """
    from flow_omni.eval.timing import measure_latency
    from flow_omni.models.flow_omni import FlowOmni

    run = _run_dir(cfg, variant, seed)
    key = {"weights": _weights_stamp(run / "model"), "prompts": [e.id for e in test],
           "max_new_positions": cfg.max_new_positions, "threads": torch.get_num_threads()}
    path = run / "latency.json"
    cached = _read_keyed(path, key)
    if cached is not None:
        return cached["rows"]
    model = FlowOmni.from_pretrained(run / "model")
    lats = [measure_latency(model, Sample("T2A", prompt_text=e.text), warmup=int(i == 0), seed=0,
                            text_temperature=0.0, speech_temperature=0.0, max_new_positions=cfg.max_new_positions)
            for i, e in enumerate(test)]
    first = [x.first_audio_s for x in lats if x.first_audio_s is not None]
    rtf = [x.rtf for x in lats if math.isfinite(x.rtf)]
    metrics = {"first_audio_s": float(np.median(first))} if first else {}  # a silent model has no latency
    if rtf:
        metrics["rtf"] = float(np.median(rtf))
    rows = _rows(variant.name, seed, "latency", "clean", metrics, len(lats))
    atomic_write_text(path, json.dumps({"key": key, "rows": rows}, indent=1))
    return rows


def _run_in_worker(cfg_dict: dict, variant_dict: dict, seed: int, corpus: str) -> tuple[list[dict], dict]:
    """One run in a worker process (top-level so that ``spawn`` can pickle it)."""
    cfg = RobustnessConfig.from_dict(cfg_dict)
    torch.set_num_threads(cfg.threads)
    asr, vocoder = _scorers(cfg)
    return run_one(cfg, VariantSpec.from_dict(variant_dict), seed, Path(corpus), _test_sets(cfg, Path(corpus)),
                   asr=asr, vocoder=vocoder, progress=False)


def _write_raw(out: Path, rows: list[dict], timings: dict) -> None:
    atomic_write_text(out / "results.json", json.dumps({"rows": rows, "aggregate": aggregate(rows),
                                                        "timings": timings}, indent=1))
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["variant", "seed", "task", "condition", "metric", "value", "n"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())
