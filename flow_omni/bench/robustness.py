"""The robustness benchmark: continuous vs discrete speech tokens, trained and tested on equal terms.

Every *variant* (continuous flow head, k-means codes, RVQ codes with per-level delay, a low-rate
single codebook, …) is the same tiny backbone, layout, data, mel space and vocoder; only the speech
stream differs. Each variant is trained with the same budget on the same corpus for every seed, then
scored under listening conditions by :func:`flow_omni.eval.robustness.evaluate_model` (ASR, TTS and
spoken QA under noise, pitch and rate changes and unseen voices), and its streaming TTS latency is
timed after the other tasks, one model at a time (:mod:`flow_omni.bench.latency`).

Results are kept per seed and reported as mean ± std over seeds: ``report.md``, ``results.json``,
``results.csv``, PNG plots of each metric against SNR (one line per variant), and sample WAVs per
condition. Each finished run's scores stay in its folder (:mod:`flow_omni.bench.cache`), so a rerun
resumes; with ``jobs > 1`` runs train side by side in worker processes (:mod:`flow_omni.bench.pool`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, as_completed, wait
from pathlib import Path

import torch
from tqdm.auto import tqdm

from flow_omni.bench.cache import cached_run, eval_key, run_dir, training_settings, weights_stamp, write_keyed
from flow_omni.bench.config import RobustnessConfig, VariantSpec
from flow_omni.bench.latency import LATENCY_PROMPTS, run_latency
from flow_omni.bench.pool import worker_pool
from flow_omni.bench.progress import RunWatch, benchmark_stages, corpus_size, finetune_seconds, run_seconds
from flow_omni.bench.results import write_results
from flow_omni.checkpoint import atomic_write_text
from flow_omni.checks import check_output_folder
from flow_omni.data.corpus import CorpusConfig, build_corpus
from flow_omni.data.dataset import has_whisper_features, whisper_features
from flow_omni.data.features import FeatureCache
from flow_omni.data.manifest import read_manifest
from flow_omni.errors import FlowOmniError
from flow_omni.eval.asr import WhisperASR
from flow_omni.eval.report import write_robustness_report
from flow_omni.eval.robustness import FINETUNED, aggregate, evaluate_model
from flow_omni.models.flow_omni import FlowOmni, FlowOmniConfig
from flow_omni.stages import StageReporter
from flow_omni.training.config import TrainConfig
from flow_omni.training.train import build_model, recipe_path, train
from flow_omni.vocoder import load_vocoder


def ensure_corpus(cfg: RobustnessConfig, progress: bool = True) -> Path:
    """The corpus folder, built with ``corpus_config`` if it has no manifests yet."""
    root = Path(cfg.corpus)
    if not (root / "train.jsonl").is_file():
        build_corpus(CorpusConfig.from_dict(cfg.corpus_config), root, progress=progress)
    return root


def _recipe(cfg: RobustnessConfig) -> TrainConfig:
    return TrainConfig.load(recipe_path(cfg.recipe)) if cfg.recipe else TrainConfig()


#: Seconds between looks at the runs training in worker processes.
POLL_S = 2.0


def _input_files(corpus: Path) -> list[str]:
    """The audio files runs read as input (train and valid), each once: what the frozen encoder encodes."""
    return sorted({e.audio for name in ("train", "valid") for e in read_manifest(corpus / f"{name}.jsonl")})


#: Files one worker encodes per task when the feature stage runs in worker processes: small enough
#: for a progress bar that moves, large enough that a task's overhead is a few per cent.
ENCODE_CHUNK = 64


def fill_feature_cache(cfg: RobustnessConfig, corpus: Path, progress: bool = True) -> int:
    """Compute the frozen speech encoder's features of every training input once, before the runs.

    Runs in parallel would otherwise each encode the same files during their first epoch. With
    ``cfg.jobs > 1`` the files not cached yet are shared out to that many worker processes, which
    encode faster than one process on as many threads (README, the demo's timings). Returns how many
    files were encoded (0 when the recipe's encoder is not a frozen Whisper).
    """
    config = run_config(cfg, cfg.variants[0], cfg.seeds[0], corpus, progress=False)
    model = _seeded_model(config)
    if not model.encoder.frozen:
        return 0
    cache = FeatureCache(config.data.resolved_cache_dir(), model.config.speech.mel)
    inputs = _input_files(corpus)
    paths = [p for p in inputs if not has_whisper_features(cache, model.encoder, p)]
    bar = tqdm(
        total=len(inputs), initial=len(inputs) - len(paths), desc="speech encoder features", disable=not progress
    )
    jobs = min(cfg.jobs, -(-len(paths) // ENCODE_CHUNK))
    if jobs <= 1:
        for path in paths:
            whisper_features(cache, model.encoder, path)
            bar.update()
        bar.close()
        return cache.stats.misses
    threads = cfg.threads or max(1, (torch.get_num_threads() or 1) // jobs)
    chunks = [paths[i : i + ENCODE_CHUNK] for i in range(0, len(paths), ENCODE_CHUNK)]
    misses = 0
    with worker_pool(jobs) as pool, contextlib.closing(bar):
        futures = {pool.submit(_encode_in_worker, config.to_dict(), chunk, threads): len(chunk) for chunk in chunks}
        for fut in as_completed(futures):
            misses += fut.result()
            bar.update(futures[fut])
    return misses


def _seeded_model(config: TrainConfig) -> FlowOmni:
    """The model of ``config`` as its training builds it (same seed), so that an encoder that is not
    pretrained has the weights, and so the cache keys, of the first run's."""
    torch.manual_seed(config.seed)
    return build_model(config)


@functools.lru_cache(maxsize=1)
def _worker_encoder(config_json: str) -> tuple[torch.nn.Module, FeatureCache]:
    """A worker's speech encoder and feature cache, built by its first task and kept for the next ones."""
    config = TrainConfig.from_dict(json.loads(config_json))
    model = _seeded_model(config)
    return model.encoder, FeatureCache(config.data.resolved_cache_dir(), model.config.speech.mel)


def _encode_in_worker(config_dict: dict, paths: list[str], threads: int) -> int:
    """Encode ``paths`` into the feature cache in a worker process; returns how many were not cached yet."""
    torch.set_num_threads(threads)
    encoder, cache = _worker_encoder(json.dumps(config_dict, sort_keys=True))
    before = cache.stats.misses
    for path in paths:
        whisper_features(cache, encoder, path)
    return cache.stats.misses - before


def run_config(cfg: RobustnessConfig, variant: VariantSpec, seed: int, corpus: Path, progress: bool = True):
    """The TrainConfig of one (variant, seed) run: the recipe, then the run's own fields, then the shared budget."""
    out = run_dir(cfg, variant, seed)
    base = {
        "out_dir": str(out),
        "seed": seed,
        "progress": progress,
        "loggers": ["csv"],
        "threads": cfg.threads,
        "model": {"preset": variant.preset, "r": variant.r, "overrides": variant.model_overrides()},
        "data": {"train": [str(corpus / "train.jsonl")], "valid": [str(corpus / "valid.jsonl")]},
        "val_every_steps": 10**9,
        "checkpoint_every_steps": 500,
    }
    # The benchmark measures on test sets; no validation, to save time. The precision is resolved here, so
    # that a kept run's settings name the precision it trained in.
    return _recipe(cfg).merged(base).merged(cfg.train).merged({"data": {"valid": []}}).with_precision_resolved()


def finetune_config(cfg: RobustnessConfig, variant: VariantSpec, seed: int, corpus: Path, progress: bool = True):
    """The TrainConfig of a run's noisy-domain fine-tune: the ``noisy_finetune`` recipe from the run's trained
    model, on the same corpus with the same batch, input window and precision, for ``finetune_share`` of
    the run's steps; then ``cfg.finetune``. The recipe's own before/after scoring is off: the benchmark
    scores the model itself, under its own conditions."""
    base = run_config(cfg, variant, seed, corpus, progress)
    steps = max(1, round(cfg.finetune_share * base.max_steps))
    run = run_dir(cfg, variant, seed)
    over = {
        "out_dir": str(run / "noisy_finetune"),
        "seed": seed,
        "progress": progress,
        "loggers": ["csv"],
        "threads": cfg.threads,
        "precision": base.precision,
        "model": {"init_from": str(run / "model")},
        "data": {
            "train": list(base.data.train),
            "valid": [],
            "batch_size": base.data.batch_size,
            "max_seconds": base.data.max_seconds,
            "cache_dir": base.data.cache_dir,
        },
        "max_steps": steps,
        "optim": {"warmup_steps": min(100, max(1, steps // 10))},
        "val_every_steps": 10**9,
        "checkpoint_every_steps": 500,
        "eval": None,
    }
    return TrainConfig.load(recipe_path("noisy_finetune")).merged(over).merged(cfg.finetune)


def run_settings(cfg: RobustnessConfig, variant: VariantSpec, seed: int, corpus: Path) -> dict:
    """What one run's weights depend on (:func:`~flow_omni.bench.cache.training_settings` of its config)."""
    return training_settings(run_config(cfg, variant, seed, corpus), corpus)


def _reuse(config: TrainConfig, corpus: Path) -> Path | None:
    """The model a finished run of ``config`` left in its folder, or None when it has not finished.

    A model trained with other settings is refused (one line, naming the folder), never relabelled:
    its scores would be kept under these settings."""
    out = config.out
    if not (out / "model" / "model.safetensors").is_file():
        return None
    try:
        before = training_settings(TrainConfig.load(out / "config.yaml"), corpus)
    except (OSError, FlowOmniError):
        before = None
    if before != training_settings(config, corpus):
        raise FlowOmniError(
            f"{out} holds a model trained with other settings than this benchmark's; use another out_dir, "
            "or remove that run folder to train it again"
        )
    return out / "model"


def _trained_precision(run: Path) -> str | None:
    """The precision the run in ``run`` trained in, as its config.yaml records it (``auto`` resolved when
    it started), or None where that file cannot be read."""
    try:
        return TrainConfig.load(run / "config.yaml").precision
    except (OSError, FlowOmniError):
        return None


def train_variant(
    cfg: RobustnessConfig, variant: VariantSpec, seed: int, corpus: Path, progress: bool = True
) -> tuple[Path, float | None]:
    """Train one variant with the shared budget; reuses a finished run (the benchmark can be resumed).
    Returns the model folder and the training time before this call resumed the run, which its
    checkpoint kept (0 for a fresh run; None for a reused model, and where the checkpoint did not keep it)."""
    config = run_config(cfg, variant, seed, corpus, progress)
    model = _reuse(config, corpus)
    if model is not None:
        return model, None
    return config.out / "model", train(config, resume="auto").seconds_before_resume


def run_robustness(cfg: RobustnessConfig, *, progress: bool = True, title: str = "bench") -> Path:
    """Train every variant for every seed, evaluate, and write the report; returns ``report.md``.

    Runs whose scores are already on disk for the same evaluation settings are reused, so an
    interrupted benchmark resumes; with ``cfg.jobs > 1`` the remaining runs go to worker processes.
    A line as each stage starts (``[title 3/5] …``) says how long it has run and about how long it has
    left, with or without ``progress`` bars.
    """
    out = check_output_folder(cfg.out_dir, "out_dir")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
    # Seed by seed: an interrupted grid has every variant on its first seeds, a comparison already.
    runs = [(v, s) for s in cfg.seeds for v in cfg.variants]
    done: dict[tuple[str, int], tuple[list[dict], dict]] = {}
    todo = []
    # Kept scores name the corpus by its contents (corpus_id), so none can match before it is built.
    built = (Path(cfg.corpus) / "train.jsonl").is_file()
    settings = {(v.name, s): run_settings(cfg, v, s, Path(cfg.corpus)) for v, s in runs} if built else {}
    for v, s in runs:
        cached = cached_run(cfg, v, s, settings[(v.name, s)]) if built else None
        if cached is not None:
            done[(v.name, s)] = cached
        else:
            todo.append((v, s))
    jobs = min(cfg.jobs, len(todo))
    encodes = _encodes_inputs(run_config(cfg, *runs[0], Path(cfg.corpus)))
    stages = _stages(cfg, todo, jobs, title, encodes)

    root = Path(cfg.corpus)
    if (root / "train.jsonl").is_file():
        stages.skip("corpus", f"{root} is built")
    else:
        stages.start("corpus", str(root))
    corpus = ensure_corpus(cfg, progress)
    settings = settings or {(v.name, s): run_settings(cfg, v, s, corpus) for v, s in runs}
    test, qa, unseen = _test_sets(cfg, corpus)
    if not todo:
        stages.skip("features", "every run is trained and scored already")
    elif not encodes:
        stages.skip("features", "the runs train their speech encoder, so nothing is encoded beforehand")
    else:
        stages.start("features", "the frozen encoder reads every training input once, for all runs")
        fill_feature_cache(cfg, corpus, progress)
    if cfg.threads:  # this process scores (jobs = 1) and times latency; workers set their own
        torch.set_num_threads(cfg.threads)

    if jobs > 1:
        stages.start("runs")
        done.update(_run_in_pool(cfg, todo, jobs, corpus, stages, progress))
    else:
        asr, vocoder = _scorers(cfg)
        for v, s in todo:
            name = f"{v.name}-seed{s}"
            stages.start(f"train {name}")
            done[(v.name, s)] = run_one(
                cfg,
                v,
                s,
                corpus,
                (test, qa, unseen),
                asr=asr,
                vocoder=vocoder,
                progress=progress,
                on_trained=lambda name=name: stages.start(f"score {name}"),
            )
    latency: dict[tuple[str, int], list[dict]] = {}
    if "tts" in cfg.tasks and test:
        stages.start("latency")
        # After the pool has closed, one run at a time: streaming latency is wall-clock and must not
        # be measured while other runs share the cores.
        for v, s in tqdm(runs, desc="latency", disable=not progress):
            latency[(v.name, s)] = run_latency(cfg, v, s, test[:LATENCY_PROMPTS], settings[(v.name, s)])
    elif "tts" in cfg.tasks:
        stages.skip("latency", "no test prompts")
    stages.start("report")
    by_variant = [(v, s) for v in cfg.variants for s in cfg.seeds]
    rows = [r for v, s in by_variant for r in done[(v.name, s)][0] + latency.get((v.name, s), [])]
    timings = {f"{v.name}/seed{s}": done[(v.name, s)][1] for v, s in by_variant}
    write_results(out, rows, timings)
    report = write_robustness_report(
        out, cfg, rows, aggregate(rows), timings, {"test": len(test), "qa": len(qa), "unseen": len(unseen)}
    )
    stages.finish()
    return report


def _stages(
    cfg: RobustnessConfig, todo: list[tuple[VariantSpec, int]], jobs: int, title: str, encodes: bool
) -> StageReporter:
    """The stage reporter of a benchmark call, with what each stage is expected to take."""
    built = (Path(cfg.corpus) / "train.jsonl").is_file()
    wavs, planned = (0, 0) if built else corpus_size(cfg)
    inputs = 0
    if todo and encodes:  # a corpus built before says itself what the encoder reads
        inputs = len(_input_files(Path(cfg.corpus))) if built else planned
    config = run_config(cfg, *(todo or [(cfg.variants[0], cfg.seeds[0])])[0], Path(cfg.corpus))
    finetune_s = 0.0
    if cfg.tuned_variants():
        p_augment = TrainConfig.load(recipe_path("noisy_finetune")).merged(cfg.finetune).data.p_augment
        finetune_s = finetune_seconds(cfg, config.max_steps, config.data.batch_size, config.precision, p_augment)
    plan = benchmark_stages(
        cfg,
        todo,
        steps=config.max_steps,
        batch_size=config.data.batch_size,
        jobs=jobs,
        wavs=wavs,
        inputs=inputs,
        precision=config.precision,
        finetune_s=finetune_s,
    )
    return StageReporter(title, plan)


def _encodes_inputs(config: TrainConfig) -> bool:
    """Whether the runs' speech encoder is a frozen Whisper, whose features are computed before training."""
    spec = config.model
    model = FlowOmniConfig.preset(spec.preset, r=spec.r).merged(spec.overrides or {})
    return model.encoder.frozen


def _run_in_pool(
    cfg: RobustnessConfig,
    todo: list[tuple[VariantSpec, int]],
    jobs: int,
    corpus: Path,
    stages: StageReporter,
    progress: bool,
) -> dict[tuple[str, int], tuple[list[dict], dict]]:
    """Train and score ``todo`` in ``jobs`` worker processes, following their steps from here."""
    threads = cfg.threads or max(1, (torch.get_num_threads() or 1) // jobs)
    worker_cfg = cfg.merged({"threads": threads}).to_dict()
    config = run_config(cfg, *todo[0], corpus)
    train_s, eval_s = run_seconds(cfg, config.max_steps, config.data.batch_size, config.precision)
    watch = RunWatch(cfg, todo, config.max_steps, stages, progress=progress, train_share=train_s / (train_s + eval_s))
    done = {}
    with worker_pool(jobs) as pool, contextlib.closing(watch):
        futures = {pool.submit(_run_in_worker, worker_cfg, v.to_dict(), s, str(corpus)): (v, s) for v, s in todo}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
            for fut in finished:
                v, s = futures[fut]
                try:
                    done[(v.name, s)] = fut.result()
                except Exception as exc:
                    # Fail now, not after every queued run: finished runs are kept in their folders,
                    # and workers still running stop with this process.
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise RuntimeError(f"benchmark run {v.name}/seed{s} failed: {exc}") from exc
                watch.scored_run(f"{v.name}-seed{s}")
            watch.poll()
    return done


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
        asr = WhisperASR() if WhisperASR.available() else None
    return asr, vocoder


def run_one(
    cfg: RobustnessConfig,
    variant: VariantSpec,
    seed: int,
    corpus: Path,
    sets,
    *,
    asr=None,
    vocoder=None,
    progress: bool = True,
    on_trained: Callable[[], None] | None = None,
) -> tuple[list[dict], dict]:
    """Train (or reuse) one variant for one seed and score it; keeps the scores in the run folder.

    ``on_trained`` is called between the two (the benchmark starts its scoring stage there)."""
    run = run_dir(cfg, variant, seed)
    trained_before = (run / "model" / "model.safetensors").is_file()
    t0 = time.perf_counter()
    model_dir, seconds_before = train_variant(cfg, variant, seed, corpus, progress)
    train_s = time.perf_counter() - t0 + (seconds_before or 0.0)  # a resumed run: with the time before it
    if trained_before and (run / "train_time.json").is_file():
        train_s = json.loads((run / "train_time.json").read_text())["train_s"]
    else:
        atomic_write_text(run / "train_time.json", json.dumps({"train_s": train_s}))
    if on_trained is not None:
        on_trained()
    t1 = time.perf_counter()
    model = FlowOmni.from_pretrained(model_dir)
    samples = seed == cfg.seeds[0]  # the report plays the first seed's samples

    def score(model: FlowOmni, name: str) -> list[dict]:
        return score_model(cfg, model, (name, seed), sets, asr=asr, vocoder=vocoder, samples=samples, progress=progress)

    rows = score(model, variant.name)
    timing = {"train_s": train_s, "eval_s": time.perf_counter() - t1, "parameters": model.num_parameters()}
    precision = _trained_precision(run)
    if precision is not None:  # what `auto` chose on the machine that trained, for the report's budget line
        timing["precision"] = precision
    if variant.name in cfg.tuned_variants():
        t2 = time.perf_counter()
        ft_config = finetune_config(cfg, variant, seed, corpus, progress)
        ft_dir = _reuse(ft_config, corpus)
        if ft_dir is None:
            train(ft_config, resume="auto")
            ft_dir = ft_config.out / "model"
        t3 = time.perf_counter()
        rows += score(FlowOmni.from_pretrained(ft_dir), variant.name + FINETUNED)
        timing.update(finetune_s=t3 - t2, finetune_eval_s=time.perf_counter() - t3)
    train_key = run_settings(cfg, variant, seed, corpus)
    write_keyed(run / "eval.json", eval_key(cfg, model_dir, variant, train_key), rows=rows, timing=timing)
    return rows, timing


def score_model(
    cfg: RobustnessConfig,
    model: FlowOmni,
    label: tuple[str, int],
    sets,
    *,
    asr=None,
    vocoder=None,
    samples: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Score one model (``label``: its name in the report and its seed) on the test ``sets`` (test, qa,
    unseen) under ``cfg``'s conditions and tasks; with ``samples``, the first ``cfg.sample_wavs`` items
    of each task and condition are kept in ``out_dir/wavs/<name>`` for the report's listening section."""
    wav_dir = Path(cfg.out_dir) / "wavs" / label[0] if samples and cfg.sample_wavs else None
    if wav_dir is not None:
        wav_dir.mkdir(parents=True, exist_ok=True)
    test, qa, unseen = sets
    return evaluate_model(
        model,
        test,
        qa,
        cfg.conditions(),
        unseen=unseen,
        tasks=cfg.tasks,
        max_new_positions=cfg.max_new_positions,
        label=label,
        wav_dir=wav_dir,
        sample_wavs=cfg.sample_wavs,
        vocoder=vocoder,
        external_asr=asr,
        speech_answer_conditions=cfg.speech_answer_conditions,
        progress=progress,
    )


def scored_model(run: Path) -> Path | None:
    """``run/model`` when the run's ``eval.json`` holds the scores of exactly these weights (the file's size
    and mtime, :func:`~flow_omni.bench.cache.weights_stamp`); else None (not scored yet, or retrained since)."""
    try:
        key = json.loads((run / "eval.json").read_text())["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    stamp = weights_stamp(run / "model")
    return run / "model" if stamp is not None and key.get("weights") == stamp else None


def keep_samples(cfg: RobustnessConfig, seed: int, *, overwrite: bool = False, progress: bool = True) -> list[Path]:
    """The report's sample audio from ``seed``'s scored models, for a benchmark whose first seed's models
    are gone (a grid resumed from kept scores on another machine): each variant whose run of ``seed`` is
    scored (:func:`scored_model`), and its noisy fine-tune, heard on the first ``cfg.sample_wavs`` items of
    each task and condition, kept in ``out_dir/wavs/<name>`` with ``samples.json`` (which names the seed).
    The scores of those few items are not kept. Returns the folders written; variants whose run is not
    scored yet have none.

    Raises :class:`FlowOmniError` when no run of ``seed`` is scored, and when a folder it would write
    already holds samples, unless ``overwrite`` (then its old WAVs are removed first)."""
    if cfg.sample_wavs < 1:
        raise FlowOmniError(f"sample_wavs is {cfg.sample_wavs}; expected at least 1 item to keep")
    corpus = Path(cfg.corpus)
    models = {}
    for v in cfg.variants:
        model = scored_model(run_dir(cfg, v, seed))
        if model is None:
            continue
        models[v.name] = model
        if v.name not in cfg.tuned_variants():
            continue
        tuned = finetune_config(cfg, v, seed, corpus, progress=False).out / "model"
        if (tuned / "model.safetensors").is_file():
            models[v.name + FINETUNED] = tuned  # scored in the same eval.json as the model it starts from
    runs = Path(cfg.out_dir) / "runs"
    if not models:
        raise FlowOmniError(
            f"no run of seed {seed} in {runs} is scored; expected <variant>-seed{seed}/model and eval.json"
        )
    wavs = Path(cfg.out_dir) / "wavs"
    there = [name for name in models if (wavs / name).exists()]
    if there and not overwrite:
        raise FlowOmniError(
            f"{wavs} already holds the samples of {', '.join(there)}; "
            "they are replaced only with overwrite (--overwrite on the command line)"
        )
    sets = tuple(items[: cfg.sample_wavs] for items in _test_sets(cfg, corpus))
    asr, vocoder = _scorers(cfg)
    for name, model_dir in tqdm(models.items(), desc="samples", disable=not progress):
        shutil.rmtree(wavs / name, ignore_errors=True)
        model = FlowOmni.from_pretrained(model_dir)
        score_model(cfg, model, (name, seed), sets, asr=asr, vocoder=vocoder, samples=True, progress=False)
    return [wavs / name for name in models]


def _run_in_worker(cfg_dict: dict, variant_dict: dict, seed: int, corpus: str) -> tuple[list[dict], dict]:
    """One run in a worker process (top-level so that ``spawn`` can pickle it)."""
    cfg = RobustnessConfig.from_dict(cfg_dict)
    torch.set_num_threads(cfg.threads)
    asr, vocoder = _scorers(cfg)
    return run_one(
        cfg,
        VariantSpec.from_dict(variant_dict),
        seed,
        Path(corpus),
        _test_sets(cfg, Path(corpus)),
        asr=asr,
        vocoder=vocoder,
        progress=False,
    )


__all__ = [
    "RobustnessConfig",
    "VariantSpec",
    "ensure_corpus",
    "keep_samples",
    "run_config",
    "run_one",
    "run_robustness",
    "finetune_config",
    "run_settings",
    "score_model",
    "scored_model",
    "train_variant",
]
