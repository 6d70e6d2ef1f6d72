"""The Vocos-24k log-mel spectrogram, computed by Vocos' own feature extractor.

Using ``vocos.feature_extractors.MelSpectrogramFeatures`` (rather than a look-alike) is a design
decision (docs/design.md, "Speech tokens"): any Vocos checkpoint trained on this mel then decodes our speech tokens
exactly. Defaults are those of ``charactr/vocos-mel-24khz``: 24 kHz, n_fft 1024, hop 256, 100 bins,
center padding, magnitude (power 1), natural log clamped at 1e-7 → 93.75 frames per second.

Shapes: waveform ``(T,)`` or ``(B, T)`` → mel ``(n_mels, F)`` or ``(B, n_mels, F)`` with
``F = T // hop + 1`` (center padding).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
from torch import nn
from vocos.feature_extractors import MelSpectrogramFeatures

from flow_omni.audio.io import validate_audio
from flow_omni.config import Config
from flow_omni.errors import ConfigError, MelShapeError

#: log(1e-7): the value Vocos' ``safe_log`` gives to silence; the floor of every log-mel.
LOG_MEL_FLOOR = math.log(1e-7)


@dataclasses.dataclass
class MelConfig(Config):
    """Parameters of the log-mel that defines the continuous speech token space."""

    sample_rate: int = 24000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 100
    padding: Literal["center", "same"] = "center"

    def __post_init__(self) -> None:
        if self.hop_length <= 0 or self.n_fft < self.hop_length:
            raise ConfigError(f"MelConfig: need 0 < hop_length <= n_fft, got hop {self.hop_length}, n_fft {self.n_fft}")
        if self.n_mels <= 0 or self.sample_rate <= 0:
            raise ConfigError(
                f"MelConfig: n_mels and sample_rate must be positive, got {self.n_mels}, {self.sample_rate}"
            )

    @property
    def frame_rate(self) -> float:
        """Mel frames per second of audio (93.75 for the defaults)."""
        return self.sample_rate / self.hop_length

    @property
    def min_samples(self) -> int:
        """The fewest samples (at ``sample_rate``) the log-mel accepts: reflect padding needs more than
        half a window (``center``); ``same`` padding needs a hop."""
        return self.n_fft // 2 + 1 if self.padding == "center" else self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` of audio."""
        if self.padding == "center":
            return num_samples // self.hop_length + 1
        return num_samples // self.hop_length


def check_mel(mel: torch.Tensor, n_mels: int, *, name: str = "mel") -> torch.Tensor:
    """Raise :class:`MelShapeError` unless ``mel`` is ``(n_mels, F)`` or ``(B, n_mels, F)`` and finite."""
    if not isinstance(mel, torch.Tensor) or mel.dim() not in (2, 3):
        shape = tuple(mel.shape) if isinstance(mel, torch.Tensor) else type(mel).__name__
        raise MelShapeError(f"{name}: expected (n_mels, frames) or (batch, n_mels, frames), got {shape}")
    if mel.shape[-2] != n_mels:
        raise MelShapeError(
            f"{name}: has {mel.shape[-2]} mel bins on axis -2 (shape {tuple(mel.shape)}); expected {n_mels}"
        )
    if mel.shape[-1] == 0:
        raise MelShapeError(f"{name}: has 0 frames")
    if not bool(torch.isfinite(mel).all()):
        raise MelShapeError(f"{name}: contains NaN/Inf values")
    return mel


class LogMel(nn.Module):
    """Waveform → Vocos log-mel. A thin wrapper that validates input and keeps the config."""

    def __init__(self, config: MelConfig | None = None) -> None:
        super().__init__()
        self.config = config or MelConfig()
        c = self.config
        self.extractor = MelSpectrogramFeatures(
            sample_rate=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, n_mels=c.n_mels, padding=c.padding
        )

    @torch.no_grad()
    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``(T,)`` or ``(B, T)`` float waveform at ``config.sample_rate`` → ``(…, n_mels, F)``."""
        validate_audio(audio, name="audio for LogMel")
        if audio.shape[-1] < self.config.min_samples:
            raise MelShapeError(
                f"audio for LogMel: {audio.shape[-1]} samples is too short; need at least {self.config.min_samples}"
            )
        return self.extractor(audio.float())

    def filterbank(self) -> torch.Tensor:
        """The mel filterbank ``(n_fft // 2 + 1, n_mels)`` (used by the Griffin-Lim fallback)."""
        return self.extractor.mel_spec.mel_scale.fb.detach().clone()

    def ceiling(self) -> float:
        """An upper bound on any log-mel value of audio in [-1, 1].

        A magnitude STFT bin is at most the window sum (``n_fft / 2`` for the periodic Hann window),
        so mel bin m is at most that times the sum of filter m's weights.
        """
        window_sum = float(self.extractor.mel_spec.spectrogram.window.sum())
        return math.log(window_sum * float(self.filterbank().sum(0).max()))
