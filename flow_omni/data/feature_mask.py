"""SpecAugment-style masking of encoder input features (Park et al., 2019), for training only.

Audio augmentation (:mod:`flow_omni.audio.augment`) changes the waveform, so a frozen Whisper
encoder must run again on every augmented input. Masking acts on the features themselves, cached
encoder outputs included, and costs nothing: a few spans of frames (time masks) and of feature
dimensions (channel masks) are set to zero. It is a regulariser against a decoder that learns its
training sentences instead of listening to them.

Shapes: features ``(F, C)``, ``F`` frames, ``C`` feature dimensions.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from flow_omni.config import Config
from flow_omni.errors import ConfigError


@dataclasses.dataclass
class FeatureMaskConfig(Config):
    """How many spans to mask and how wide each may be, as a fraction of the frames or dimensions."""

    time_masks: int = 2
    time_width: float = 0.1  # each time mask covers at most this fraction of the frames
    channel_masks: int = 2
    channel_width: float = 0.1  # each channel mask covers at most this fraction of the dimensions

    def __post_init__(self) -> None:
        for name in ("time_masks", "channel_masks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"FeatureMaskConfig.{name} must be an integer >= 0, got {value!r}")
        for name in ("time_width", "channel_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"FeatureMaskConfig.{name} must be within [0, 1], got {value!r}")


def _spans(rng: np.random.Generator, size: int, count: int, width: float) -> list[tuple[int, int]]:
    """``count`` spans ``[start, stop)`` within ``size``, each of a width drawn from 0..floor(width * size)."""
    most = int(width * size)
    spans = []
    for _ in range(count):
        w = int(rng.integers(0, most + 1))
        start = int(rng.integers(0, size - w + 1))
        spans.append((start, start + w))
    return spans


def mask_features(features: torch.Tensor, config: FeatureMaskConfig, rng: np.random.Generator) -> torch.Tensor:
    """A copy of ``features`` ``(F, C)`` with the drawn time and channel spans set to zero."""
    if features.dim() != 2:
        raise ValueError(f"mask_features: expected (F, C) features, got shape {tuple(features.shape)}")
    out = features.clone()
    frames, dims = out.shape
    for a, b in _spans(rng, frames, config.time_masks, config.time_width):
        out[a:b] = 0
    for a, b in _spans(rng, dims, config.channel_masks, config.channel_width):
        out[:, a:b] = 0
    return out


__all__ = ["FeatureMaskConfig", "mask_features"]
