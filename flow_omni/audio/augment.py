"""Random augmentation chain for noisy-domain fine-tuning: speed → pitch → reverb → noise.

The order follows the physics of a recording: the talker's rate and pitch are properties of the
source, the room colours the speech, and background noise is added at the microphone (a noise
source is not reverberated with the talker's room response here). Each step is applied with its
own probability; ``__call__`` returns the audio and a record of what was applied, so that a
benchmark or a data loader can log and stratify by perturbation.

Typical use as a data transform (per-example seeds keep epochs reproducible)::

    aug = Augmenter(AugmentConfig(), babble_pool=synth_corpus(16, seed=1))
    noisy, info = aug(clean, rng=seed_of_this_example)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np
import torch

from flow_omni.audio.noise import CLIP_PEAK, NOISE_KINDS, RngLike, as_rng, make_noise, mix_at_snr, require_mono
from flow_omni.audio.perturb import add_reverb, pitch_shift, speed_perturb
from flow_omni.audio.synth import synth_corpus
from flow_omni.config import Config
from flow_omni.errors import AudioError, ConfigError


def _range(cfg_name: str, value: list[float], lo_bound: float | None = None) -> None:
    if len(value) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
        raise ConfigError(f"AugmentConfig.{cfg_name}: expected two finite numbers [low, high], got {value!r}")
    if value[0] > value[1]:
        raise ConfigError(f"AugmentConfig.{cfg_name}: low {value[0]} is above high {value[1]}")
    if lo_bound is not None and value[0] <= lo_bound:
        raise ConfigError(f"AugmentConfig.{cfg_name}: values must be > {lo_bound}, got {value!r}")


@dataclasses.dataclass
class AugmentConfig(Config):
    """Probabilities and ranges of each perturbation (ranges are ``[low, high]``, drawn uniformly).

    Defaults aim at noisy-domain fine-tuning: 80 % of examples get noise at 0–20 dB SNR, a
    minority get mild rate/pitch changes (±10 %, ±2 semitones) or a room (RT60 0.2–0.8 s), and
    about 9 % stay untouched so that clean-speech performance is not traded away.
    """

    noise_kinds: list[str] = dataclasses.field(default_factory=lambda: ["white", "pink", "brown", "babble"])
    snr_db_range: list[float] = dataclasses.field(default_factory=lambda: [0.0, 20.0])
    p_noise: float = 0.8
    speed_range: list[float] = dataclasses.field(default_factory=lambda: [0.9, 1.1])
    p_speed: float = 0.2
    pitch_semitones_range: list[float] = dataclasses.field(default_factory=lambda: [-2.0, 2.0])
    p_pitch: float = 0.2
    rt60_range: list[float] = dataclasses.field(default_factory=lambda: [0.2, 0.8])
    p_reverb: float = 0.3
    drr_db_range: list[float] = dataclasses.field(default_factory=lambda: [0.0, 10.0])
    n_talkers: int = 4

    def __post_init__(self) -> None:
        for name in ("p_noise", "p_speed", "p_pitch", "p_reverb"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
                raise ConfigError(f"AugmentConfig.{name}: a probability must be within [0, 1], got {p!r}")
        if not self.noise_kinds and self.p_noise > 0:
            raise ConfigError("AugmentConfig.noise_kinds: empty while p_noise > 0")
        unknown = [k for k in self.noise_kinds if k not in NOISE_KINDS]
        if unknown:
            raise ConfigError(f"AugmentConfig.noise_kinds: unknown kind(s) {unknown}; valid: {list(NOISE_KINDS)}")
        _range("snr_db_range", self.snr_db_range)
        _range("speed_range", self.speed_range, lo_bound=0.0)
        _range("pitch_semitones_range", self.pitch_semitones_range)
        _range("rt60_range", self.rt60_range, lo_bound=0.0)
        _range("drr_db_range", self.drr_db_range)
        if self.n_talkers < 1:
            raise ConfigError(f"AugmentConfig.n_talkers: must be >= 1, got {self.n_talkers}")


def synthetic_babble_pool(sample_rate: int = 24000) -> list[torch.Tensor]:
    """The talkers babble is drawn from when no real speech is given: 8 synthetic utterances ``(T_i,)``,
    always the same ones (a fixed seed), so that babble works out of the box and repeats for a seed.

    They are synthesised once per process and sample rate (the benchmark mixes babble into every test
    item of every babble condition) and handed out as copies, so a caller that changes its copy
    changes no one else's."""
    return [t.clone() for t in _babble_talkers(sample_rate)]


@functools.lru_cache(maxsize=4)
def _babble_talkers(sample_rate: int) -> tuple[torch.Tensor, ...]:
    return tuple(synth_corpus(8, seed=12345, sample_rate=sample_rate))


class Augmenter:
    """Applies :class:`AugmentConfig`'s random perturbations to ``(T,)`` waveforms.

    Args:
        babble_pool: utterances ``(T_i,)`` that babble is drawn from. If None and "babble" is a
            noise kind, a pool of 8 synthetic talkers (``synth_corpus``, fixed seed) is made on
            first use, so babble works out of the box; pass real speech for realistic babble.
    """

    def __init__(
        self,
        config: AugmentConfig | None = None,
        sample_rate: int = 24000,
        babble_pool: list[torch.Tensor] | None = None,
    ):
        self.config = config if config is not None else AugmentConfig()
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        self.sample_rate = sample_rate
        if babble_pool is not None:
            if len(babble_pool) == 0:
                raise ValueError("babble_pool is empty; pass None to use synthetic talkers")
            for i, u in enumerate(babble_pool):
                require_mono(u, f"babble_pool[{i}]", allow_silent=False)
        self._babble_pool = babble_pool

    @property
    def babble_pool(self) -> list[torch.Tensor]:
        if self._babble_pool is None:
            self._babble_pool = synthetic_babble_pool(self.sample_rate)
        return self._babble_pool

    def __call__(self, audio: torch.Tensor, rng: RngLike = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Augment one utterance.

        Args:
            audio: ``(T,)`` float waveform (non-silent when noise may be added).
            rng: seed, Generator or None; an int seed makes the result reproducible.
        Returns:
            ``(audio', info)``: ``audio'`` is ``(T',)`` float32 (``T' != T`` only after speed
            perturbation); ``info["applied"]`` lists the steps in order and each step adds its
            parameters: ``speed_factor``, ``pitch_semitones``, ``rt60``/``drr_db``,
            ``noise_kind``/``snr_db``.
        """
        require_mono(audio, "audio")
        cfg = self.config
        gen = as_rng(rng)
        # Draw every decision up front, in a fixed order, so that changing one probability does not
        # reshuffle the parameters of the other steps for the same seed.
        coins = gen.random(4)
        # Three decimals make the factor exactly representable by speed_perturb (q <= 1000).
        speed = round(float(gen.uniform(*cfg.speed_range)), 3)
        semitones = float(gen.uniform(*cfg.pitch_semitones_range))
        rt60 = float(gen.uniform(*cfg.rt60_range))
        drr = float(gen.uniform(*cfg.drr_db_range))
        kind = str(cfg.noise_kinds[int(gen.integers(len(cfg.noise_kinds)))]) if cfg.noise_kinds else None
        snr = float(gen.uniform(*cfg.snr_db_range))
        step_seed = gen.integers(2**63, size=2)  # independent streams for the RIR and the noise

        info: dict[str, Any] = {"applied": []}
        out = audio.detach().float()
        if coins[0] < cfg.p_speed and speed != 1.0:
            out = speed_perturb(out, speed, self.sample_rate)
            info["applied"].append("speed")
            info["speed_factor"] = speed
        if coins[1] < cfg.p_pitch and semitones != 0.0:
            out = pitch_shift(out, semitones, self.sample_rate)
            info["applied"].append("pitch")
            info["pitch_semitones"] = semitones
        if coins[2] < cfg.p_reverb:
            out = add_reverb(out, self.sample_rate, rt60, int(step_seed[0]), direct_to_reverb_db=drr)
            info["applied"].append("reverb")
            info["rt60"], info["drr_db"] = rt60, drr
        if coins[3] < cfg.p_noise and kind is not None:
            try:
                require_mono(out, "audio", allow_silent=False)
            except AudioError as exc:
                raise AudioError(f"{exc} (noise is mixed at an SNR relative to the speech)") from None
            noise_gen = np.random.default_rng(int(step_seed[1]))
            noise = make_noise(
                kind,
                out.shape[0],
                noise_gen,
                utterances=self.babble_pool if kind == "babble" else None,
                n_talkers=cfg.n_talkers,
                sample_rate=self.sample_rate,
            )
            out = mix_at_snr(out, noise, snr, rng=noise_gen)
            info["applied"].append("noise")
            info["noise_kind"], info["snr_db"] = kind, snr
        peak = float(out.abs().max())
        if peak > 1.0:  # speed/pitch/reverb can raise the peak; keep the waveform in [-1, 1]
            out = out * (CLIP_PEAK / peak)
            info["gain"] = CLIP_PEAK / peak
        return out.contiguous(), info
