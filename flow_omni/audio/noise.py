"""Additive noise: coloured noise, babble, SNR measurement and mixing at a requested SNR.

No noise recordings ship offline (docs/design.md, "Offline assets"), so noise is generated: white,
pink (1/f power, -10 dB/decade), brown (1/f², -20 dB/decade) and babble (several other talkers).

Randomness convention for all of ``flow_omni.audio``: every random function takes
``rng: np.random.Generator | int | None`` (see :func:`as_rng`): an int is a seed (deterministic),
a Generator is used and advanced in place (reproducible streams), None draws fresh OS entropy.

SNR convention: ``10 log10(sum(speech²) / sum(noise²))`` over the whole utterance, silences
included, which is what most robustness benchmarks report.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flow_omni.audio.io import SILENCE_PEAK, validate_audio
from flow_omni.checks import check_number
from flow_omni.errors import AudioError

RngLike = np.random.Generator | int | None

#: Noise kinds understood by :func:`make_noise`.
NOISE_KINDS = ("white", "pink", "brown", "babble")
#: Peak the mixture is brought down to when speech + noise would clip; a little under 1.0 so
#: that float32 rounding and 16-bit PCM writing cannot clip either.
CLIP_PEAK = 0.99
#: The largest |SNR| in dB that mixing accepts: float32 samples resolve about 150 dB, so beyond it one
#: of the two signals vanishes in the other's rounding (and 10^(SNR/10) overflows long before 10^4 dB).
MAX_SNR_DB = 150.0


def as_rng(rng: RngLike) -> np.random.Generator:
    """Turn an int seed, a Generator or None into a ``np.random.Generator``."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"seed must be non-negative, got {rng}")
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


def require_mono(audio: torch.Tensor, name: str = "audio", *, allow_silent: bool = True) -> torch.Tensor:
    """Validate a ``(T,)`` waveform (finite, non-empty, float) and return it; raise AudioError."""
    validate_audio(audio, name=name, allow_silent=allow_silent)
    if audio.dim() != 1:
        raise AudioError(f"{name}: expected mono audio of shape (T,), got {tuple(audio.shape)}; use to_mono first")
    return audio


def _check_num_samples(num_samples: int) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples <= 0:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    return int(num_samples)


def _unit_rms(x: np.ndarray) -> torch.Tensor:
    x = x - x.mean()
    rms = math.sqrt(float(np.mean(x * x)))
    if rms == 0.0:  # only for num_samples == 1, where a zero-mean signal must be 0
        return torch.zeros(x.shape[0], dtype=torch.float32)
    return torch.from_numpy((x / rms).astype(np.float32))


def white_noise(num_samples: int, rng: RngLike = None) -> torch.Tensor:
    """Gaussian white noise, zero mean, unit RMS: ``(num_samples,)`` float32."""
    n = _check_num_samples(num_samples)
    return _unit_rms(as_rng(rng).standard_normal(n))


def _power_law_noise(n: int, exponent: float, rng: RngLike, sample_rate: int, min_freq: float) -> torch.Tensor:
    """Noise with power spectrum ∝ 1/f^exponent above ``min_freq`` (flat below it), unit RMS.

    Shaping white noise in the frequency domain gives the exact slope on every bin. The floor at
    ``min_freq`` matters for brown noise: a pure 1/f² spectrum puts almost all of its energy in the
    lowest FFT bin (sub-audible rumble), which would make "SNR 0 dB" mostly inaudible.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if not (math.isfinite(min_freq) and min_freq > 0):
        raise ValueError(f"min_freq must be a positive frequency in Hz, got {min_freq}")
    spec = np.fft.rfft(as_rng(rng).standard_normal(n))
    freqs = np.fft.rfftfreq(n, d=1.0 / sample_rate)
    gain = np.maximum(freqs, min_freq) ** (-exponent / 2.0)  # amplitude ∝ f^(-exponent/2)
    gain[0] = 0.0  # zero DC, hence exactly zero mean
    return _unit_rms(np.fft.irfft(spec * gain, n=n))


def pink_noise(
    num_samples: int, rng: RngLike = None, *, sample_rate: int = 24000, min_freq: float = 20.0
) -> torch.Tensor:
    """1/f ("pink") noise, -10 dB/decade PSD, zero mean, unit RMS: ``(num_samples,)`` float32."""
    return _power_law_noise(_check_num_samples(num_samples), 1.0, rng, sample_rate, min_freq)


def brown_noise(
    num_samples: int, rng: RngLike = None, *, sample_rate: int = 24000, min_freq: float = 20.0
) -> torch.Tensor:
    """1/f² ("brown") noise, -20 dB/decade PSD, zero mean, unit RMS: ``(num_samples,)`` float32."""
    return _power_law_noise(_check_num_samples(num_samples), 2.0, rng, sample_rate, min_freq)


def babble(utterances: list[torch.Tensor], num_samples: int, n_talkers: int = 4, rng: RngLike = None) -> torch.Tensor:
    """Several talkers at once: ``(num_samples,)`` float32, zero mean, unit RMS.

    Each talker is one of ``utterances`` (``(T_i,)`` each; drawn without replacement while there
    are enough, so talkers differ), RMS-normalised so that no talker dominates, looped to length
    and started at a random offset so that onsets do not line up.
    """
    n = _check_num_samples(num_samples)
    if isinstance(n_talkers, bool) or not isinstance(n_talkers, int) or n_talkers < 1:
        raise ValueError(f"n_talkers must be a positive integer, got {n_talkers!r}")
    if not utterances:
        raise ValueError("babble needs at least one utterance to draw talkers from (got an empty list)")
    for i, u in enumerate(utterances):
        require_mono(u, f"babble utterance {i}", allow_silent=False)
    gen = as_rng(rng)
    idx = gen.choice(len(utterances), size=n_talkers, replace=n_talkers > len(utterances))
    mix = np.zeros(n)
    for i in idx:
        u = utterances[int(i)].detach().cpu().double().numpy()
        u = u / math.sqrt(float(np.mean(u * u)))
        offset = int(gen.integers(u.shape[0]))
        reps = -(-(n + offset) // u.shape[0])
        mix += np.tile(u, reps)[offset : offset + n]
    return _unit_rms(mix)


def make_noise(
    kind: str,
    num_samples: int,
    rng: RngLike = None,
    utterances: list[torch.Tensor] | None = None,
    *,
    n_talkers: int = 4,
    sample_rate: int = 24000,
) -> torch.Tensor:
    """Noise of ``kind`` in :data:`NOISE_KINDS`: ``(num_samples,)`` float32, unit RMS.

    ``utterances`` (the talker pool) is required for "babble" and ignored otherwise.
    """
    if kind == "white":
        return white_noise(num_samples, rng)
    if kind == "pink":
        return pink_noise(num_samples, rng, sample_rate=sample_rate)
    if kind == "brown":
        return brown_noise(num_samples, rng, sample_rate=sample_rate)
    if kind == "babble":
        if not utterances:
            raise ValueError("noise kind 'babble' needs utterances=[...] (a pool of other talkers' audio)")
        return babble(utterances, num_samples, n_talkers=n_talkers, rng=rng)
    raise ValueError(f"unknown noise kind {kind!r}; expected one of {list(NOISE_KINDS)}")


def _energy(x: torch.Tensor) -> float:
    x64 = x.detach().cpu().double()
    return float(torch.dot(x64, x64))


def measure_snr_db(clean: torch.Tensor, noise: torch.Tensor) -> float:
    """``10 log10(sum clean² / sum noise²)`` for two ``(T,)`` signals of the same length.

    Raises:
        AudioError: different lengths, or either signal silent (the SNR is then undefined).
    """
    require_mono(clean, "clean")
    require_mono(noise, "noise")
    if clean.shape != noise.shape:
        raise AudioError(f"clean and noise must have the same length, got {clean.shape[0]} and {noise.shape[0]}")
    e_clean, e_noise = _energy(clean), _energy(noise)
    if e_clean == 0.0 or e_noise == 0.0:
        which = "clean" if e_clean == 0.0 else "noise"
        raise AudioError(f"SNR is undefined: the {which} signal is all zeros")
    return 10.0 * math.log10(e_clean / e_noise)


def fit_length(noise: torch.Tensor, num_samples: int, rng: RngLike = None) -> torch.Tensor:
    """Tile ``noise`` ``(T_n,)`` when shorter than ``num_samples``, crop a random window when longer."""
    t_n = noise.shape[0]
    if t_n == num_samples:
        return noise
    if t_n < num_samples:
        return noise.repeat(-(-num_samples // t_n))[:num_samples]
    start = int(as_rng(rng).integers(t_n - num_samples + 1))
    return noise[start : start + num_samples]


def mix_at_snr(
    speech: torch.Tensor,
    noise: torch.Tensor,
    snr_db: float,
    rng: RngLike = None,
    return_noise: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Add ``noise`` to ``speech`` (both ``(T,)``-like) at exactly ``snr_db``.

    The noise is fitted to the speech length (:func:`fit_length`), scaled so that
    ``measure_snr_db(speech, scaled_noise) == snr_db``, and added. If the mixture would clip
    (peak > 1), speech and noise are scaled down *together* to peak :data:`CLIP_PEAK`, which keeps
    the SNR unchanged (then ``mixture - noise`` is the scaled speech).

    Returns:
        ``(T,)`` float32 mixture, or ``(mixture, noise_component)`` if ``return_noise``.
    Raises:
        ConfigError: ``snr_db`` not a finite number within ±:data:`MAX_SNR_DB`.
        AudioError: empty/non-finite/non-mono input, or silent speech or noise (SNR undefined).
    """
    snr_db = check_number(snr_db, "snr_db", low=-MAX_SNR_DB, high=MAX_SNR_DB)
    require_mono(speech, "speech")
    require_mono(noise, "noise")
    if float(speech.abs().max()) < SILENCE_PEAK:
        raise AudioError("speech is silent: an SNR relative to it is undefined")
    if float(noise.abs().max()) < SILENCE_PEAK:
        raise AudioError("noise is silent: it cannot be scaled to a finite SNR")
    # float64 throughout so the realised SNR matches the request to ~1e-6 dB after the float32 cast.
    s = speech.detach().cpu().double()
    v = fit_length(noise.detach().cpu().double(), s.shape[0], rng)
    e_s, e_v = float(torch.dot(s, s)), float(torch.dot(v, v))
    if e_v == 0.0:  # the cropped window of a mostly-silent noise can still be all zeros
        raise AudioError("the noise window used is all zeros: SNR undefined (is the noise mostly silence?)")
    v = v * math.sqrt(e_s / (e_v * 10.0 ** (snr_db / 10.0)))
    mix = s + v
    peak = float(mix.abs().max())
    if peak > 1.0:
        gain = CLIP_PEAK / peak
        mix, v = mix * gain, v * gain
    mix = mix.float().to(speech.device)
    if return_noise:
        return mix, v.float().to(speech.device)
    return mix
