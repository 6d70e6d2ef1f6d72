"""Latency and real-time factor of streaming generation.

:func:`measure_latency` runs :meth:`FlowOmni.stream` once on one prompt and times, with
``time.perf_counter`` from the call: the first text piece, the first speech (the first "audio"
event when a vocoder is given, else the first "mel" event: the vocoder's look-ahead makes the
former later), and the end of the stream. ``audio_s`` is the duration of the speech produced
(vocoder samples / sample rate, else mel frames / frame rate), and ``rtf = total_s / audio_s``
(below 1 means faster than real time).

Latencies are wall-clock on whatever else the machine is doing: on a shared CPU, take the median
of several runs, and pass ``warmup=1`` to keep one-time costs (lazy initialisation, allocator
growth) out of the measurement.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Latency:
    """Timings (seconds) of one streamed generation; ``None`` when that output never came."""

    first_audio_s: float | None  # first "audio" event (with a vocoder) or first "mel" event
    first_text_s: float | None  # first "text" event
    total_s: float  # until the stream was exhausted
    audio_s: float  # duration of the generated speech
    rtf: float  # total_s / audio_s; inf when no speech was generated


def real_time_factor(seconds_compute: float, seconds_audio: float) -> float:
    """Compute time per second of audio (< 1: faster than real time); ``inf`` for no audio."""
    if seconds_compute < 0 or seconds_audio < 0 or math.isnan(seconds_compute) or math.isnan(seconds_audio):
        raise ValueError(f"times must be non-negative, got compute {seconds_compute}, audio {seconds_audio}")
    if seconds_audio == 0:
        return math.inf if seconds_compute > 0 else math.nan
    return seconds_compute / seconds_audio


@torch.no_grad()
def measure_latency(model, sample, *, vocoder=None, chunk_tokens: int = 4, warmup: int = 0, **gen) -> Latency:
    """Time one :meth:`FlowOmni.stream` of ``sample`` (a :class:`~flow_omni.layout.Sample` prompt).

    Args:
        vocoder: passed to ``stream``; latency to speech is then to the first audio samples.
        chunk_tokens: speech tokens per mel chunk (smaller: earlier first audio, more overhead).
        warmup: untimed runs before the timed one.
        **gen: :class:`~flow_omni.models.generation.GenerationConfig` overrides (``max_new_positions``,
            ``seed``, ``steps``, ...).
    """
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
    model.eval()
    for _ in range(warmup):
        for _ in model.stream(sample, vocoder=vocoder, chunk_tokens=chunk_tokens, **gen):
            pass
    speech_kind = "audio" if vocoder is not None else "mel"
    first_text = first_speech = None
    samples = frames = 0
    start = time.perf_counter()
    for event in model.stream(sample, vocoder=vocoder, chunk_tokens=chunk_tokens, **gen):
        now = time.perf_counter() - start
        if event.kind == "text" and first_text is None:
            first_text = now
        elif event.kind == "mel":
            frames += int(event.mel.shape[-1])
        elif event.kind == "audio":
            samples += int(event.audio.numel())
        if event.kind == speech_kind and first_speech is None:
            first_speech = now
    total = time.perf_counter() - start
    if vocoder is not None:
        audio_s = samples / float(vocoder.sample_rate)
    else:
        audio_s = frames / float(model.config.speech.mel.frame_rate)
    return Latency(first_speech, first_text, total, audio_s, real_time_factor(total, audio_s))
