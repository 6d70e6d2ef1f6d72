"""Signal perturbations for robustness tests and augmentation: rate, pitch and reverberation.

Three different "speed" knobs, because benchmarks need to separate them:

- :func:`speed_perturb` — Kaldi/sox ``speed``: resample and play at the original rate, so tempo
  *and* pitch change by ``factor`` (the standard ASR augmentation);
- :func:`time_stretch` — tempo only (phase vocoder), pitch kept;
- :func:`pitch_shift` — pitch only, length kept.

Reverberation uses a synthetic room impulse response (no pyroomacoustics on the reference
machine): direct path + sparse early reflections + an exponentially decaying noise tail whose
energy falls 60 dB in ``rt60`` seconds (Polack's statistical model of a diffuse late field).

All functions take and return ``(T,)`` float32 tensors; randomness follows ``noise.as_rng``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import librosa
import numpy as np
import torch
import torchaudio.functional as AF
from scipy import signal

from flow_omni.audio.noise import RngLike, as_rng, require_mono
from flow_omni.checks import check_number
from flow_omni.errors import AudioError

#: ln(1000): amplitude decay over one RT60 (60 dB of energy = a factor 1000 in amplitude).
_LN_1000 = math.log(1000.0)
#: librosa's STFT size for time_stretch/pitch_shift; shorter input would be mostly padding.
_MIN_STFT_SAMPLES = 2048
#: The largest speed or tempo factor and reverberation time (s) accepted, and the largest pitch shift
#: (semitones): beyond them the result is no longer speech a model could be asked to understand.
MAX_FACTOR, MAX_RT60, MAX_SEMITONES = 10.0, 10.0, 24.0


def _check_positive(value: float, name: str, hi: float | None = None) -> float:
    return check_number(value, name, low=0.0, low_open=True, high=hi)


def _check_stft_length(audio: torch.Tensor, what: str, sample_rate: int | None = None) -> None:
    """AudioError when ``audio`` is too short for librosa's STFT-based ``what``."""
    n = audio.shape[0]
    if n < _MIN_STFT_SAMPLES:

        def secs(k: int) -> str:
            return f" ({k / sample_rate:.3f} s)" if sample_rate else ""

        raise AudioError(
            f"audio of {n} samples{secs(n)} is too short for {what}, which needs at least "
            f"{_MIN_STFT_SAMPLES} samples{secs(_MIN_STFT_SAMPLES)}"
        )


def _check_sample_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    return int(sample_rate)


def _to_numpy(audio: torch.Tensor) -> np.ndarray:
    return audio.detach().cpu().float().numpy()


def _from_numpy(x: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(like.device)


def speed_perturb(audio: torch.Tensor, factor: float, sample_rate: int = 24000) -> torch.Tensor:
    """Play ``audio`` ``(T,)`` ``factor`` times faster: tempo and pitch both scale by ``factor``.

    Returns ``(ceil(T * q / p),)`` where ``p/q`` is ``factor`` as a fraction with ``q <= 1000``:
    exact for factors with three decimals (1.1, 0.95, 1.037), within 5e-4 otherwise. The bound
    keeps the polyphase resampler cheap (its kernel grows with ``q``). ``sample_rate`` does not
    change the result; it is accepted for a uniform API.
    """
    require_mono(audio, "audio")
    factor = _check_positive(factor, "speed factor", hi=MAX_FACTOR)
    _check_sample_rate(sample_rate)
    if factor == 1.0:
        return audio.clone()
    frac = Fraction(factor).limit_denominator(1000)
    # Treat the samples as if recorded at factor×rate and resample back to the rate: fewer
    # samples played at the same rate = faster and higher (sox "speed", Kaldi speed perturbation).
    out = AF.resample(audio.detach().float().unsqueeze(0), orig_freq=frac.numerator, new_freq=frac.denominator)
    return out.squeeze(0).contiguous()


def time_stretch(audio: torch.Tensor, rate: float) -> torch.Tensor:
    """Change tempo by ``rate`` (> 1 faster) keeping pitch: ``(T,)`` → ``(≈ T / rate,)``."""
    require_mono(audio, "audio")
    rate = _check_positive(rate, "time-stretch rate", hi=MAX_FACTOR)
    _check_stft_length(audio, "a time stretch")
    if rate == 1.0:
        return audio.clone()
    return _from_numpy(librosa.effects.time_stretch(_to_numpy(audio), rate=rate), audio)


def pitch_shift(audio: torch.Tensor, semitones: float, sample_rate: int = 24000) -> torch.Tensor:
    """Shift pitch by ``semitones`` (factor ``2**(semitones/12)``) keeping length: ``(T,)`` → ``(T,)``."""
    require_mono(audio, "audio")
    sample_rate = _check_sample_rate(sample_rate)
    semitones = check_number(semitones, "semitones", low=-MAX_SEMITONES, high=MAX_SEMITONES)
    _check_stft_length(audio, "a pitch shift", sample_rate)
    if semitones == 0.0:
        return audio.clone()
    y = librosa.effects.pitch_shift(_to_numpy(audio), sr=sample_rate, n_steps=semitones)
    return _from_numpy(y, audio)


def synthetic_rir(
    sample_rate: int,
    rt60: float,
    rng: RngLike = None,
    *,
    length: int | None = None,
    direct_to_reverb_db: float = 3.0,
    n_early: int = 12,
) -> torch.Tensor:
    """A room impulse response with reverberation time ``rt60``: ``(length,)`` float32, unit energy.

    The direct path sits at sample 0, so convolving does not delay the speech (alignments with
    text or mel frames survive). Early reflections are sparse signed impulses in 2–40 ms; the late
    tail is Gaussian noise under ``exp(-ln(1000) t / rt60)``, faded in over the first 5 ms. The
    reflections and tail together carry ``direct_to_reverb_db`` dB less energy than the direct
    path (the DRR: about 0–10 dB for a talker a metre or two from the microphone).

    Args:
        length: samples; default ``rt60 + 50 ms``, by which point the tail is 60 dB down.
    """
    sample_rate = _check_sample_rate(sample_rate)
    rt60 = _check_positive(rt60, "rt60", hi=MAX_RT60)
    if not math.isfinite(direct_to_reverb_db):
        raise ValueError(f"direct_to_reverb_db must be finite, got {direct_to_reverb_db!r}")
    if length is None:
        length = int(math.ceil((rt60 + 0.05) * sample_rate))
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 2:
        raise ValueError(f"length must be an integer >= 2, got {length!r}")
    gen = as_rng(rng)
    t = np.arange(length) / sample_rate
    envelope = np.exp(-_LN_1000 * t / rt60)
    reverb = gen.standard_normal(length) * envelope
    onset = max(1, int(0.005 * sample_rate))  # the diffuse field builds up after the direct sound
    ramp = np.minimum(1.0, np.arange(length) / onset)
    reverb *= ramp
    reverb[0] = 0.0
    # Early reflections: a few distinct echoes (walls, table) above the diffuse tail's level.
    lo, hi = max(1, int(0.002 * sample_rate)), max(2, int(0.04 * sample_rate))
    if n_early > 0 and hi < length:
        taps = gen.integers(lo, hi, size=n_early)
        reverb[taps] += gen.choice([-1.0, 1.0], size=n_early) * gen.uniform(1.0, 3.0, size=n_early) * envelope[taps]
    e_rev = float(np.sum(reverb**2))
    rir = reverb * math.sqrt(10.0 ** (-direct_to_reverb_db / 10.0) / e_rev)  # direct energy is 1
    rir[0] = 1.0
    rir /= math.sqrt(float(np.sum(rir**2)))
    return torch.from_numpy(rir.astype(np.float32))


def add_reverb(
    audio: torch.Tensor,
    sample_rate: int,
    rt60: float,
    rng: RngLike = None,
    *,
    direct_to_reverb_db: float = 3.0,
    rir: torch.Tensor | None = None,
) -> torch.Tensor:
    """Convolve ``audio`` ``(T,)`` with a synthetic RIR (or the given ``rir`` ``(L,)``).

    Returns ``(T,)``: the reverberant tail past the end is cut so that lengths and alignments are
    kept, and the output is rescaled to the input's RMS so reverberation does not change loudness.
    """
    require_mono(audio, "audio")
    if rir is None:
        rir = synthetic_rir(sample_rate, rt60, rng, direct_to_reverb_db=direct_to_reverb_db)
    else:
        require_mono(rir, "rir", allow_silent=False)
    x = audio.detach().cpu().double().numpy()
    y = signal.fftconvolve(x, rir.detach().cpu().double().numpy())[: x.shape[0]]
    rms_in = math.sqrt(float(np.mean(x * x)))
    rms_out = math.sqrt(float(np.mean(y * y)))
    if rms_in > 0.0 and rms_out > 0.0:
        y *= rms_in / rms_out
    return _from_numpy(y, audio)
