"""Continuous speech tokens: audio ↔ normalised groups of ``r`` Vocos log-mel frames.

:class:`ContinuousSpeechTokenizer` bundles the three steps that define the token space (log-mel,
per-bin normalisation, grouping) behind one config, :class:`SpeechTokenConfig`, which every model
checkpoint stores so that tokens written by one process decode identically in another.

Tail rule: when the frame count is not a multiple of ``r``, the *raw* log-mel is padded with the
silence floor (``LOG_MEL_FLOOR``) before normalising, so the padded frames are exact silence in
every bin and decode to silence; :meth:`decode` crops them when given ``num_frames``.

Shapes: audio ``(T,)``/``(B, T)`` → tokens ``(N, r*n_mels)``/``(B, N, r*n_mels)`` → mel
``(n_mels, F)``/``(B, n_mels, F)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from flow_omni.audio.mel import LOG_MEL_FLOOR, LogMel, MelConfig, check_mel
from flow_omni.audio.normalize import MelNormalizer, MelStats, fit_mel_stats
from flow_omni.audio.tokens import group_frames, num_tokens, ungroup_frames
from flow_omni.config import Config
from flow_omni.errors import ConfigError, MelShapeError


@dataclasses.dataclass
class SpeechTokenConfig(Config):
    """The continuous token space: mel parameters, reduction factor ``r`` and normalisation stats."""

    mel: MelConfig = dataclasses.field(default_factory=MelConfig)
    r: int = 4
    stats: MelStats = dataclasses.field(default_factory=MelStats)

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"SpeechTokenConfig: r must be >= 1, got {self.r}")
        if self.stats.n_mels == 0:
            self.stats = MelStats.identity(self.mel.n_mels)
        if self.stats.n_mels != self.mel.n_mels:
            raise ConfigError(
                f"SpeechTokenConfig: stats have {self.stats.n_mels} bins but the mel has {self.mel.n_mels}"
            )

    @property
    def token_dim(self) -> int:
        return self.r * self.mel.n_mels

    @property
    def token_rate(self) -> float:
        """Tokens per second of audio (23.4 for r=4 at 93.75 frames/s)."""
        return self.mel.frame_rate / self.r


class ContinuousSpeechTokenizer(nn.Module):
    """Audio or log-mel → normalised continuous tokens, and tokens → log-mel (exact inverse)."""

    def __init__(self, config: SpeechTokenConfig | None = None) -> None:
        super().__init__()
        self.config = config or SpeechTokenConfig()
        self.logmel = LogMel(self.config.mel)
        self.normalizer = MelNormalizer(self.config.stats)
        self._mel_range = (LOG_MEL_FLOOR, self.logmel.ceiling())

    @property
    def r(self) -> int:
        return self.config.r

    @property
    def token_dim(self) -> int:
        return self.config.token_dim

    def fit(self, audios: Iterable[torch.Tensor]) -> MelStats:
        """Fit normalisation statistics on waveforms and install them (returns the stats)."""
        return self.fit_mels(self.logmel(a) for a in audios)

    def fit_mels(self, mels: Iterable[torch.Tensor]) -> MelStats:
        """Fit normalisation statistics on raw log-mels ``(n_mels, F)`` and install them."""
        stats = fit_mel_stats(mels, n_mels=self.config.mel.n_mels)
        self.config = dataclasses.replace(self.config, stats=stats)
        self.normalizer = MelNormalizer(stats).to(self.normalizer.mean.device)
        return stats

    def mel(self, audio: torch.Tensor) -> torch.Tensor:
        """``(T,)``/``(B, T)`` waveform at the mel sample rate → raw log-mel ``(…, n_mels, F)``."""
        return self.logmel(audio)

    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Raw log-mel ``(…, n_mels, F)`` → tokens ``(…, ceil(F/r), r*n_mels)``."""
        check_mel(mel, self.config.mel.n_mels)
        rem = mel.shape[-1] % self.r
        if rem:
            mel = F.pad(mel, (0, self.r - rem), value=LOG_MEL_FLOOR)
        return group_frames(self.normalizer.normalize(mel), self.r, tail="error")

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """Waveform → tokens (see :meth:`encode_mel`)."""
        return self.encode_mel(self.mel(audio))

    def decode(self, tokens: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Tokens ``(…, N, r*n_mels)`` → raw log-mel ``(…, n_mels, F)`` (cropped to ``num_frames``).

        The log-mel is clamped to the range audio can produce (the extraction floor up to
        :meth:`LogMel.ceiling`): a no-op for tokens of real audio, but generated tokens can leave it (a
        flow head running away on a long greedy generation reached log-mel 1117, which overflows
        ``exp`` in any vocoder).
        """
        if tokens.shape[-1] != self.token_dim:
            raise MelShapeError(
                f"speech tokens have size {tokens.shape[-1]}; this tokenizer uses r={self.r} x "
                f"{self.config.mel.n_mels} bins = {self.token_dim}"
            )
        mel = self.normalizer.denormalize(ungroup_frames(tokens, self.r, num_frames=num_frames))
        return mel.clamp(*self._mel_range)

    def num_tokens(self, num_samples: int) -> int:
        return num_tokens(self.config.mel.num_frames(num_samples), self.r)

    def silence_token(self) -> torch.Tensor:
        """The token of ``r`` silent frames, ``(r*n_mels,)`` (what a padded tail holds)."""
        floor = torch.full((self.config.mel.n_mels, self.r), LOG_MEL_FLOOR, device=self.normalizer.mean.device)
        return group_frames(self.normalizer.normalize(floor), self.r)[0]
