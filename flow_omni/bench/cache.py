"""What a benchmark run keeps on disk so that a rerun reuses it: scores and timings keyed by their settings.

A run's folder is ``out_dir/runs/<variant>-seed<k>``. Its ``eval.json`` and ``latency.json`` hold
``{"key": ..., ...}``: the key records everything the numbers depend on (the training settings that
made the weights, and the weights file by size and mtime; the test sets; the evaluation settings), and
a file whose key differs is computed again.

A folder may hold the scores without the model: a long benchmark's finished runs can be kept (they are
small) and put back into a new ``out_dir`` on another machine or day, where the weights are gone. Such
scores are reused when everything but the weights file matches, the training settings included.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from flow_omni.bench.config import RobustnessConfig, VariantSpec
from flow_omni.checkpoint import atomic_write_text
from flow_omni.eval.asr import WhisperASR

#: TrainConfig fields that do not change the weights a run trains.
NOT_TRAINING = ("out_dir", "progress", "loggers", "threads", "checkpoint_every_steps", "log_every_steps")


def run_dir(cfg: RobustnessConfig, variant: VariantSpec, seed: int) -> Path:
    """The folder of one (variant, seed) run: its training output, model and kept scores."""
    return Path(cfg.out_dir) / "runs" / f"{variant.name}-seed{seed}"


def weights_stamp(model_dir: Path) -> list[int] | None:
    """The model's weights file identified by size and mtime; None when it is not there."""
    try:
        st = (model_dir / "model.safetensors").stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]


#: The files of a corpus folder whose bytes identify it (its build settings and manifests, which name
#: audio files relative to themselves).
CORPUS_FILES = ("corpus.json", "train.jsonl", "valid.jsonl", "test.jsonl", "test_unseen_voices.jsonl")


def corpus_id(corpus: Path) -> str:
    """A digest of the corpus folder's build settings and manifests: the same on any machine or path."""
    h = hashlib.sha256()
    for name in CORPUS_FILES:
        path = Path(corpus) / name
        if path.is_file():
            h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def training_settings(config, corpus: Path) -> dict:
    """A run's TrainConfig as a dict, without the fields that do not change what it trains, with the
    corpus folder named by :func:`corpus_id` instead of its path (so that the settings match elsewhere)."""
    settings = {k: v for k, v in config.to_dict().items() if k not in NOT_TRAINING}
    text = json.dumps(settings, sort_keys=True).replace(json.dumps(str(corpus))[1:-1], "<corpus>")
    return {**json.loads(text), "corpus": corpus_id(corpus)}


def eval_key(cfg: RobustnessConfig, model_dir: Path, variant: VariantSpec, train: dict) -> dict:
    """Everything a run's scores depend on: the training settings ``train`` (:func:`training_settings`)
    and the weights file (:func:`weights_stamp`), the fine-tune's settings for a fine-tuned variant, the
    test sets and the evaluation settings."""
    finetune = None
    if variant.name in cfg.tuned_variants():
        finetune = {"share": cfg.finetune_share, "overrides": cfg.finetune}
    return {
        "train": train,
        "weights": weights_stamp(model_dir),
        "finetune": finetune,
        "corpus": corpus_id(Path(cfg.corpus)),
        "conditions": cfg.conditions(),
        "unseen_voices": cfg.unseen_voices,
        "tasks": list(cfg.tasks),
        "max_items": cfg.max_items,
        "max_new_positions": cfg.max_new_positions,
        "sample_wavs": cfg.sample_wavs,
        "vocoder": cfg.vocoder,
        "external_asr": bool(cfg.external_asr and WhisperASR.available()),
        "speech_answer_conditions": list(cfg.speech_answer_conditions),
    }


def read_keyed(path: Path, key: dict, *, partial: bool = False) -> dict | None:
    """A JSON file written with ``{"key": key, ...}``, or None when missing, unreadable or for another key.

    A ``key["weights"]`` of None (the weights file is gone) matches whatever weights the file was written for.
    ``partial``: only the entries of ``key`` are compared (the file's key may hold more).
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # written atomically, so a damaged file is foreign: compute again
    want = json.loads(json.dumps(key))  # JSON round trip: tuples → lists
    have = data.get("key")
    if not isinstance(have, dict):
        return None
    if "weights" in want and want["weights"] is None:
        have = {**have, "weights": None}
    if partial:
        have = {k: have.get(k) for k in want}
    return data if have == want else None


def write_keyed(path: Path, key: dict, **data) -> None:
    """Keep ``data`` in ``path`` (atomically) under ``key``, for :func:`read_keyed`."""
    atomic_write_text(path, json.dumps({"key": key, **data}, indent=1))


def cached_run(cfg: RobustnessConfig, variant: VariantSpec, seed: int, train: dict) -> tuple[list[dict], dict] | None:
    """The kept (rows, timing) of a run trained with the settings ``train`` and scored with the same
    evaluation settings (its weights on disk, or gone: see the module doc), else None."""
    run = run_dir(cfg, variant, seed)
    data = read_keyed(run / "eval.json", eval_key(cfg, run / "model", variant, train))
    return None if data is None else (data["rows"], data["timing"])
