"""Per-mel-bin normalisation of log-mel frames, with statistics that live in the model config.

The flow head samples from N(0, I) and is easiest to train when every target dimension has zero
mean and unit variance, but log-mel bins differ by several nats in level and spread. The statistics
are fitted once on data (Chan's parallel update in float64, so fitting over many files in chunks
gives the same numbers as one pass) and stored as plain lists in :class:`MelStats`, which is
saved inside every checkpoint config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch

from flow_omni.audio.mel import check_mel
from flow_omni.config import Config
from flow_omni.errors import ConfigError, MelShapeError

#: Standard deviations below this are clamped so that a constant bin does not blow up.
MIN_STD = 1e-3


@dataclasses.dataclass
class MelStats(Config):
    """Per-bin mean and standard deviation of the log-mel (``n_mels`` floats each)."""

    mean: list[float] = dataclasses.field(default_factory=list)
    std: list[float] = dataclasses.field(default_factory=list)
    count: int = 0  # frames the statistics were fitted on (0 = identity, not fitted)

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ConfigError(f"MelStats: mean has {len(self.mean)} entries but std has {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ConfigError("MelStats: every std must be positive")

    @classmethod
    def identity(cls, n_mels: int) -> MelStats:
        return cls(mean=[0.0] * n_mels, std=[1.0] * n_mels, count=0)

    @property
    def n_mels(self) -> int:
        return len(self.mean)


class MelStatsAccumulator:
    """Streaming per-bin mean/variance over many mels (float64, order-independent up to rounding)."""

    def __init__(self, n_mels: int) -> None:
        self.n_mels = n_mels
        self.count = 0
        self.mean = torch.zeros(n_mels, dtype=torch.float64)
        self.m2 = torch.zeros(n_mels, dtype=torch.float64)

    def update(self, mel: torch.Tensor) -> None:
        """Add ``(n_mels, F)`` or ``(B, n_mels, F)`` frames."""
        check_mel(mel, self.n_mels, name="mel for MelStats")
        x = mel.detach().double().transpose(-1, -2).reshape(-1, self.n_mels)  # (N, n_mels)
        n = x.shape[0]
        batch_mean = x.mean(0)
        batch_m2 = ((x - batch_mean) ** 2).sum(0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + batch_m2 + delta**2 * (self.count * n / total)
        self.count = total

    def stats(self) -> MelStats:
        if self.count < 2:
            raise MelShapeError(f"MelStats: need at least 2 frames to fit statistics, got {self.count}")
        std = (self.m2 / (self.count - 1)).sqrt().clamp_min(MIN_STD)
        return MelStats(mean=self.mean.tolist(), std=std.tolist(), count=self.count)


def fit_mel_stats(mels: Iterable[torch.Tensor], n_mels: int = 100) -> MelStats:
    """Fit :class:`MelStats` over an iterable of ``(n_mels, F)`` / ``(B, n_mels, F)`` mels."""
    acc = MelStatsAccumulator(n_mels)
    for mel in mels:
        acc.update(mel)
    return acc.stats()


class MelNormalizer(torch.nn.Module):
    """``(x - mean) / std`` per mel bin and its inverse, on ``(…, n_mels, F)`` tensors.

    The statistics are buffers (they move with ``.to(device)``) but are *not* saved in the state
    dict: they are part of the config, which is the single source of truth in a checkpoint.
    """

    def __init__(self, stats: MelStats) -> None:
        super().__init__()
        if stats.n_mels == 0:
            raise ConfigError("MelNormalizer: MelStats is empty; use MelStats.identity(n_mels) or fit_mel_stats()")
        self.stats = stats
        self.register_buffer("mean", torch.tensor(stats.mean, dtype=torch.float32).unsqueeze(-1), persistent=False)
        self.register_buffer("std", torch.tensor(stats.std, dtype=torch.float32).unsqueeze(-1), persistent=False)

    @property
    def n_mels(self) -> int:
        return self.stats.n_mels

    def normalize(self, mel: torch.Tensor) -> torch.Tensor:
        check_mel(mel, self.n_mels)
        return (mel - self.mean) / self.std

    def denormalize(self, mel: torch.Tensor) -> torch.Tensor:
        check_mel(mel, self.n_mels, name="normalised mel")
        return mel * self.std + self.mean

    forward = normalize
