"""Shared fixtures. Tests never touch the network: the hub is forced offline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import math

import pytest
import torch


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
