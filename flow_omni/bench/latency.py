"""Streaming TTS latency of the benchmark's trained runs, timed one model at a time."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from flow_omni.bench.cache import read_keyed, run_dir, weights_stamp, write_keyed
from flow_omni.bench.config import RobustnessConfig, VariantSpec
from flow_omni.data.manifest import ManifestEntry
from flow_omni.eval.robustness import metric_rows
from flow_omni.eval.timing import measure_latency
from flow_omni.layout import Sample
from flow_omni.models.flow_omni import FlowOmni

LATENCY_PROMPTS = 3  # TTS prompts timed per run; the median is reported


def run_latency(
    cfg: RobustnessConfig, variant: VariantSpec, seed: int, test: Sequence[ManifestEntry], train: dict
) -> list[dict]:
    """Streaming TTS latency of one trained run: median time to the first mel chunk and real-time factor.

    Generation only (greedy, no vocoder: the vocoder is the same for every variant); the first prompt is
    also run once untimed. Kept in ``runs/<run>/latency.json`` for the same training settings ``train``
    (:func:`~flow_omni.bench.cache.training_settings`), weights, prompts and threads; a kept file is
    reused when the weights are gone (:mod:`flow_omni.bench.cache`). A run kept without its model and
    without this file has no latency rows.
    """
    run = run_dir(cfg, variant, seed)
    key = {
        "train": train,
        "weights": weights_stamp(run / "model"),
        "prompts": [e.id for e in test],
        "max_new_positions": cfg.max_new_positions,
        "threads": torch.get_num_threads(),
    }
    path = run / "latency.json"
    cached = read_keyed(path, key)
    if cached is not None:
        return cached["rows"]
    if key["weights"] is None:  # scores kept without the model (or the latency): nothing to time
        print(f"[latency] {run.name}: not timed, its model is not in {run} (its scores were kept without it)")
        return []
    model = FlowOmni.from_pretrained(run / "model")
    lats = [
        measure_latency(
            model,
            Sample("T2A", prompt_text=e.text),
            warmup=int(i == 0),
            seed=0,
            text_temperature=0.0,
            speech_temperature=0.0,
            max_new_positions=cfg.max_new_positions,
        )
        for i, e in enumerate(test)
    ]
    first = [x.first_audio_s for x in lats if x.first_audio_s is not None]
    rtf = [x.rtf for x in lats if math.isfinite(x.rtf)]
    metrics = {"first_audio_s": float(np.median(first))} if first else {}  # a silent model has no latency
    if rtf:
        metrics["rtf"] = float(np.median(rtf))
    rows = metric_rows(variant.name, seed, "latency", "clean", metrics, len(lats))
    write_keyed(path, key, rows=rows)
    return rows
