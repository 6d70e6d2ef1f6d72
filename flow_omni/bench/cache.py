"""What a benchmark run keeps on disk so that a rerun reuses it: scores and timings keyed by their settings.

A run's folder is ``out_dir/runs/<variant>-seed<k>``. Its ``eval.json`` and ``latency.json`` hold
``{"key": ..., ...}``: the key records everything the numbers depend on (the weights, by size and
mtime; the test sets; the evaluation settings), and a file whose key differs is computed again.
"""

from __future__ import annotations

import json
from pathlib import Path

from flow_omni.bench.config import RobustnessConfig, VariantSpec
from flow_omni.checkpoint import atomic_write_text
from flow_omni.eval.asr import WhisperASR


def run_dir(cfg: RobustnessConfig, variant: VariantSpec, seed: int) -> Path:
    """The folder of one (variant, seed) run: its training output, model and kept scores."""
    return Path(cfg.out_dir) / "runs" / f"{variant.name}-seed{seed}"


def weights_stamp(model_dir: Path) -> list[int]:
    """The model's weights file identified by size and mtime."""
    st = (model_dir / "model.safetensors").stat()
    return [st.st_size, st.st_mtime_ns]


def eval_key(cfg: RobustnessConfig, model_dir: Path) -> dict:
    """Everything a run's scores depend on besides the model weights (identified by size and mtime)."""
    return {
        "weights": weights_stamp(model_dir),
        "corpus": str(Path(cfg.corpus).resolve()),
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


def read_keyed(path: Path, key: dict) -> dict | None:
    """A JSON file written with ``{"key": key, ...}``, or None when missing, unreadable or for another key."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # written atomically, so a damaged file is foreign: compute again
    return data if data.get("key") == json.loads(json.dumps(key)) else None  # JSON round trip: tuples → lists


def write_keyed(path: Path, key: dict, **data) -> None:
    """Keep ``data`` in ``path`` (atomically) under ``key``, for :func:`read_keyed`."""
    atomic_write_text(path, json.dumps({"key": key, **data}, indent=1))


def cached_run(cfg: RobustnessConfig, variant: VariantSpec, seed: int) -> tuple[list[dict], dict] | None:
    """The kept (rows, timing) of a trained run scored with the same settings, else None."""
    run = run_dir(cfg, variant, seed)
    model_dir = run / "model"
    if not (model_dir / "model.safetensors").is_file():
        return None
    data = read_keyed(run / "eval.json", eval_key(cfg, model_dir))
    return None if data is None else (data["rows"], data["timing"])
