"""Shared fixtures. Tests never touch the network: the hub is forced offline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flow_omni.audio.io import save_audio
from flow_omni.audio.synth import synth_corpus
from flow_omni.data.manifest import ManifestEntry, write_manifest

# One torch thread for the whole session, set here once. Tests that need another count set it and
# restore it themselves.
torch.set_num_threads(1)


def harmonic_tone(seconds: float = 1.0, sr: int = 24000, f0: float = 140.0, seed: int = 0) -> torch.Tensor:
    """A vibrato harmonic tone with a few partials: cheap, deterministic speech-like test audio."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    f = f0 * (1 + 0.03 * torch.sin(2 * math.pi * 5 * t))
    phase = 2 * math.pi * torch.cumsum(f, 0) / sr
    amps = torch.rand(6, generator=g, dtype=torch.float64) + 0.2
    x = sum(a / (k + 1) * torch.sin((k + 1) * phase) for k, a in enumerate(amps))
    env = torch.sin(math.pi * t / seconds).clamp_min(0) ** 0.5
    x = x * env
    return (0.5 * x / x.abs().max()).float()


@pytest.fixture
def tone():
    return harmonic_tone()


def autocorr_f0(x: np.ndarray, sr: int, fmin: float = 60.0, fmax: float = 500.0) -> float:
    """Median f0 over loud, clearly periodic 40 ms frames (normalised autocorrelation peak > 0.5)."""
    frame, hop = int(0.04 * sr), int(0.01 * sr)
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]
    rms = np.sqrt((frames**2).mean(axis=1))
    lo, hi = int(sr / fmax), int(sr / fmin)
    f0s = []
    for f in frames[rms > 0.3 * rms.max()]:
        f = (f - f.mean()) * np.hanning(frame)
        spec = np.fft.rfft(f, 2 * frame)
        ac = np.fft.irfft(np.abs(spec) ** 2)[: hi + 2]
        ac /= ac[0]
        lag = lo + int(np.argmax(ac[lo : hi + 1]))
        if ac[lag] < 0.5:
            continue
        # Parabolic interpolation of the peak: sub-sample lag precision.
        a, b, c = ac[lag - 1], ac[lag], ac[lag + 1]
        lag = lag + 0.5 * (a - c) / (a - 2 * b + c)
        f0s.append(sr / lag)
    assert len(f0s) >= 5, "too few voiced frames to estimate a pitch"
    return float(np.median(f0s))


TINY_TEXTS = ["one two", "three four", "five six", "seven", "eight nine", "ten", "red blue", "green"]


def write_tiny_corpus(out: Path) -> Path:
    """8 synthetic utterances (formant synthesiser) with spoken answers, as WAVs and ``train.jsonl`` (all 8)
    and ``valid.jsonl`` (the first 4) in ``out``: enough for a few training steps in seconds."""
    (out / "wavs").mkdir(parents=True)
    questions = synth_corpus(len(TINY_TEXTS), seed=1, duration_range=(0.6, 0.9))
    answers = synth_corpus(len(TINY_TEXTS), seed=2, duration_range=(0.4, 0.6))
    entries = []
    for i, (text, q, a) in enumerate(zip(TINY_TEXTS, questions, answers)):
        save_audio(out / f"wavs/q{i}.wav", q)
        save_audio(out / f"wavs/a{i}.wav", a)
        entries.append(
            ManifestEntry(
                f"u{i}",
                f"wavs/q{i}.wav",
                text,
                duration=q.shape[0] / 24000,
                answer_audio=f"wavs/a{i}.wav",
                answer_text=TINY_TEXTS[(i + 1) % len(TINY_TEXTS)],
                answer_duration=a.shape[0] / 24000,
            )
        )
    write_manifest(out / "train.jsonl", entries)
    write_manifest(out / "valid.jsonl", entries[:4])
    return out


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless browser of the listening-page tests. Missing, they fail under CI (``.ci/run`` sets CI and
    installs Debian's chromium) and are skipped elsewhere, with the reason."""
    from browser import chromium_path

    path = chromium_path()
    if path is None:
        why = "Chromium is not installed (Debian: apt-get install chromium); the listening-page tests need it"
        if os.environ.get("CI"):
            pytest.fail(why + "; under CI they must run")
        pytest.skip(why)
    return path
