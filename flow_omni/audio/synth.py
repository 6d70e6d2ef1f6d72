"""Speech-like audio made offline with no model: a source–filter formant synthesiser.

Tests, demos and the robustness benchmark need audio that *behaves* like speech (harmonics at a
moving f0, formants, voiced/unvoiced alternation, pauses) without shipping recordings or calling a
TTS. The recipe is the classic Klatt-style one:

- **source**: a Rosenberg glottal-flow pulse per period, differentiated (lip radiation), at an f0
  contour with declination, slow drift/vibrato and per-period jitter, plus a little aspiration;
- **filter**: cascaded 2-pole formant resonators (F1–F3 from a vowel table, scaled per speaker,
  plus a fixed F4), whose targets glide between vowels for coarticulation;
- **fricatives**: band-passed noise bursts (s, sh, f) between syllables;
- **prosody**: raised-cosine onsets/offsets per segment, per-syllable stress and short pauses.

It is not intelligible speech, but pitch trackers, mel spectrograms, SNR mixing and vocoders
treat it like speech, which is what tests need. Everything is deterministic for a seed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import signal

from flow_omni.audio.noise import RngLike, as_rng

#: (F1, F2, F3) in Hz for an adult male voice (Peterson & Barney style averages).
VOWEL_FORMANTS: dict[str, tuple[float, float, float]] = {
    "a": (730.0, 1090.0, 2440.0),  # /ɑ/ father
    "e": (530.0, 1840.0, 2480.0),  # /ɛ/ bed
    "i": (270.0, 2290.0, 3010.0),  # /i/ beet
    "o": (570.0, 840.0, 2410.0),  # /ɔ/ bought
    "u": (300.0, 870.0, 2240.0),  # /u/ boot
    "@": (640.0, 1190.0, 2390.0),  # /ʌ/ but (schwa-like)
}
#: Formant bandwidths (Hz) for F1..F4; F4 is fixed and only adds the upper spectral shape.
_BANDWIDTHS = (70.0, 100.0, 160.0, 250.0)
_F4 = 3500.0
#: Fricative pass bands (Hz); clipped to the Nyquist frequency at low sample rates.
_FRICATIVES: dict[str, tuple[float, float]] = {"s": (4000.0, 9000.0), "sh": (2000.0, 6000.0), "f": (1200.0, 8000.0)}
#: Formant coefficients are updated every 5 ms, Klatt's (1980) parameter frame rate.
_BLOCK_SECONDS = 0.005


def _rosenberg_derivative(phase: np.ndarray, open_q: float = 0.45, close_q: float = 0.18) -> np.ndarray:
    """Glottal flow derivative for per-sample phase in [0, 1): ``(T,)`` → ``(T,)``.

    The flow itself rises as a half cosine over ``open_q`` of the period and falls over
    ``close_q``; differentiating it gives the sharp negative closure spike that carries the
    high harmonics of real voiced speech (and folds in the +6 dB/oct lip radiation).
    """
    flow = np.zeros_like(phase)
    rise = phase < open_q
    fall = (phase >= open_q) & (phase < open_q + close_q)
    flow[rise] = 0.5 * (1.0 - np.cos(np.pi * phase[rise] / open_q))
    flow[fall] = np.cos(0.5 * np.pi * (phase[fall] - open_q) / close_q)
    return np.diff(flow, prepend=flow[:1])


def _glottal_source(f0_track: np.ndarray, sample_rate: int, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Pulse train following ``f0_track`` (Hz per sample, ``(T,)``) with per-period jitter."""
    n = f0_track.shape[0]
    # Jitter is drawn per period, not per sample: real jitter perturbs period lengths.
    mean_f0 = float(np.mean(f0_track))
    n_periods = int(n * mean_f0 / sample_rate * 2) + 8
    period_jitter = 1.0 + jitter * rng.standard_normal(n_periods)
    phase = np.empty(n)
    acc = 0.0
    k = 0
    inc = f0_track / sample_rate
    # Vectorised over chunks shorter than half the shortest period, so jitter can change per period.
    chunk = max(4, int(sample_rate / (2.0 * float(np.max(f0_track)))))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        steps = inc[start:stop] * period_jitter[min(k, n_periods - 1)]
        cum = acc + np.cumsum(steps)
        phase[start:stop] = cum
        acc = float(cum[-1])
        k = int(acc)
    return _rosenberg_derivative(np.mod(phase, 1.0))


def _resonator_sos(freqs: np.ndarray, bandwidths: np.ndarray, sample_rate: int) -> np.ndarray:
    """2-pole resonators as second-order sections ``(n, 6)``, each with unity gain at DC.

    Unity DC gain (Klatt's normalisation) makes the cascade reproduce the natural spectral tilt
    and the formant amplitudes that follow from the formant frequencies.
    """
    r = np.exp(-np.pi * bandwidths / sample_rate)
    a1 = -2.0 * r * np.cos(2.0 * np.pi * freqs / sample_rate)
    a2 = r * r
    zeros = np.zeros_like(r)
    return np.stack([1.0 + a1 + a2, zeros, zeros, np.ones_like(r), a1, a2], axis=1)


def _formant_filter(x: np.ndarray, tracks: np.ndarray, sample_rate: int) -> np.ndarray:
    """Filter ``x`` ``(T,)`` through cascaded time-varying resonators; ``tracks`` is ``(n, T)`` Hz.

    ``sosfilt`` only does fixed coefficients, so they are held per 2.5 ms block. Carrying the raw
    filter state into the next block's coefficients would be slightly wrong (a transposed
    direct-form state mixes coefficients and past outputs), so the state is converted back to each
    section's last two outputs and rebuilt for the new coefficients: an exact time-varying
    recursion, without clicks at block edges.
    """
    n_formants, n = tracks.shape
    block = max(1, int(round(_BLOCK_SECONDS * sample_rate)))
    bws = np.array([_BANDWIDTHS[min(j, len(_BANDWIDTHS) - 1)] for j in range(n_formants)])
    # Formants that would sit near/above Nyquist (low sample rates) are pinned below it.
    tracks = np.minimum(tracks, 0.45 * sample_rate)
    starts = np.arange(0, n, block)
    sos_all = _resonator_sos(tracks[:, starts].T.reshape(-1), np.tile(bws, starts.size), sample_rate)
    sos_all = sos_all.reshape(starts.size, n_formants, 6)
    out = np.empty_like(x)
    y1 = np.zeros(n_formants)  # per section: last output y[n-1] ...
    y2 = np.zeros(n_formants)  # ... and y[n-2]
    zi = np.empty((n_formants, 2))
    for k, start in enumerate(starts):
        sos = sos_all[k]
        a1, a2 = sos[:, 4], sos[:, 5]
        # Transposed direct form II state of "y = b0 x - a1 y[-1] - a2 y[-2]" from past outputs.
        zi[:, 0] = -a1 * y1 - a2 * y2
        zi[:, 1] = -a2 * y1
        out[start : start + block], zf = signal.sosfilt(sos, x[start : start + block], zi=zi)
        y1 = -zf[:, 1] / a2
        y2 = (-zf[:, 0] - a1 * y1) / a2
    return out


def _ramp_envelope(n: int, ramp: int) -> np.ndarray:
    """Raised-cosine onset and offset of ``ramp`` samples: ``(n,)``."""
    env = np.ones(n)
    ramp = min(ramp, n // 2)
    if ramp > 0:
        r = 0.5 * (1.0 - np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp))
        env[:ramp] = r
        env[n - ramp :] = r[::-1]
    return env


def _plan_segments(
    n: int, sample_rate: int, vowels: str, rng: np.random.Generator, rate: float
) -> list[tuple[str, int, int]]:
    """Lay out ``(kind, start, stop)`` segments covering ``n`` samples; kind is a vowel, fricative or "pause"."""
    sr = sample_rate
    segs: list[tuple[str, int, int]] = []
    pos = int(rng.uniform(0.02, 0.05) * sr)  # leading silence, as in a real recording
    v_idx = 0
    while pos < n:
        if rng.random() < 0.4:  # syllable onset consonant
            kind = str(rng.choice(list(_FRICATIVES)))
            length = int(rng.uniform(0.05, 0.11) / rate * sr)
            segs.append((kind, pos, min(n, pos + length)))
            pos += length
        vowel = vowels[v_idx % len(vowels)] if vowels else str(rng.choice(list(VOWEL_FORMANTS)))
        v_idx += 1
        length = int(rng.uniform(0.12, 0.26) / rate * sr)
        segs.append((vowel, pos, min(n, pos + length)))
        pos += length
        if rng.random() < 0.25:  # short pause between words
            pos += int(rng.uniform(0.05, 0.14) / rate * sr)
    return [s for s in segs if s[1] < n and s[2] - s[1] > 0]


def synth_speech(
    duration: float = 1.5,
    sample_rate: int = 24000,
    *,
    f0: float = 120.0,
    seed: RngLike = 0,
    vowels: str | None = None,
    formant_scale: float = 1.0,
    speaking_rate: float = 1.0,
    jitter: float = 0.01,
) -> torch.Tensor:
    """One synthetic utterance, ``(T,)`` float32 with ``T = round(duration * sample_rate)``.

    Args:
        duration: seconds (> 0).
        f0: mean fundamental frequency in Hz; the contour declines from about +6 % to -6 % of it.
        seed: int seed, ``np.random.Generator`` or None (fresh entropy), like every random
            function in ``flow_omni.audio``.
        vowels: vowel sequence drawn from ``VOWEL_FORMANTS`` keys ("aeiou@"), cycled; random if None.
        formant_scale: vocal-tract scaling of all formants (about 1.15–1.25 for female/child voices).
        speaking_rate: > 1 makes segments shorter.
        jitter: relative standard deviation of period lengths.
    Returns:
        ``(T,)`` float32, peak 0.5, silence at the start and between some words.
    """
    if not (isinstance(duration, (int, float)) and math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    if not (isinstance(sample_rate, int) and sample_rate >= 8000):
        raise ValueError(f"sample_rate must be an integer >= 8000 Hz, got {sample_rate!r}")
    if not (math.isfinite(f0) and 40.0 <= f0 <= sample_rate / 8):
        raise ValueError(f"f0 must be within [40, sample_rate/8] Hz, got {f0!r}")
    if not (math.isfinite(formant_scale) and 0.5 <= formant_scale <= 2.0):
        raise ValueError(f"formant_scale must be within [0.5, 2], got {formant_scale!r}")
    if not (math.isfinite(speaking_rate) and speaking_rate > 0):
        raise ValueError(f"speaking_rate must be > 0, got {speaking_rate!r}")
    if vowels is not None:
        bad = sorted(set(vowels) - set(VOWEL_FORMANTS))
        if not vowels or bad:
            raise ValueError(f"vowels must be a non-empty string over {''.join(VOWEL_FORMANTS)!r}, got {vowels!r}")
    rng = as_rng(seed)
    sr = sample_rate
    n = int(round(duration * sr))
    if n < 16:
        raise ValueError(f"duration {duration} s is under 16 samples at {sr} Hz; too short to synthesise")
    t = np.arange(n) / sr

    # f0: declination over the utterance + slow wander (vibrato-like drift) around the mean.
    declination = 0.06 * (1.0 - 2.0 * t / max(duration, 1e-9))
    drift_hz = rng.uniform(3.0, 6.0)
    drift = 0.02 * np.sin(2 * np.pi * drift_hz * t + rng.uniform(0, 2 * np.pi))
    f0_track = f0 * (1.0 + declination + drift)

    segs = _plan_segments(n, sr, vowels or "", rng, speaking_rate)
    voicing = np.zeros(n)
    fric = np.zeros(n)
    centres, targets = [], []
    ramp = int(0.015 * sr)
    for kind, a, b in segs:
        if kind in VOWEL_FORMANTS:
            stress = rng.uniform(0.55, 1.0)
            voicing[a:b] = stress * _ramp_envelope(b - a, ramp)
            centres.append(0.5 * (a + b))
            targets.append(np.array(VOWEL_FORMANTS[kind]) * formant_scale * rng.uniform(0.96, 1.04, size=3))
        elif kind in _FRICATIVES:
            lo, hi = _FRICATIVES[kind]
            hi = min(hi, 0.45 * sr)
            lo = min(lo, 0.5 * hi)
            sos = signal.butter(4, [lo, hi], btype="bandpass", fs=sr, output="sos")
            burst = signal.sosfilt(sos, rng.standard_normal(b - a + 256))[256:]  # drop filter warm-up
            burst /= np.sqrt(np.mean(burst**2)) + 1e-12
            fric[a:b] = burst * rng.uniform(0.08, 0.16) * _ramp_envelope(b - a, int(0.01 * sr))
    if not centres:  # too short for a whole syllable: voice the whole thing as one vowel
        voicing[:] = _ramp_envelope(n, min(ramp, n // 4))
        centres, targets = [0.5 * n], [np.array(VOWEL_FORMANTS[(vowels or "a")[0]]) * formant_scale]

    # Formant tracks: interpolate between vowel-centre targets (coarticulation), then smooth.
    tt = np.arange(n)
    tracks = np.stack([np.interp(tt, centres, [tg[j] for tg in targets]) for j in range(3)])
    win = max(1, int(0.03 * sr))
    kernel = np.hanning(win + 2)[1:-1]
    kernel /= kernel.sum()
    tracks = np.stack([np.convolve(np.pad(tr, win, mode="edge"), kernel, mode="same")[win:-win] for tr in tracks])
    tracks = np.concatenate([tracks, np.full((1, n), _F4 * formant_scale)])

    source = _glottal_source(f0_track, sr, jitter, rng)
    source /= np.sqrt(np.mean(source**2)) + 1e-12
    source = source + 0.03 * rng.standard_normal(n)  # aspiration: real voices are a bit breathy
    voiced = _formant_filter(source * voicing, tracks, sr)
    active = voicing > 0.5
    if active.any():  # level the vowels, not the silences, so fricatives sit at a fixed ratio
        voiced /= np.sqrt(np.mean(voiced[active] ** 2)) + 1e-12

    out = voiced + fric
    out -= out.mean()
    fade = min(int(0.02 * sr), n // 4)  # the last segment is cut at `duration`: avoid a click
    if fade > 0:
        out[n - fade :] *= np.linspace(1.0, 0.0, fade)
    peak = np.abs(out).max()
    if peak > 0:
        out *= 0.5 / peak
    return torch.from_numpy(out.astype(np.float32))


def synth_corpus(
    n: int,
    *,
    seed: RngLike = 0,
    duration_range: tuple[float, float] = (1.0, 2.0),
    f0_range: tuple[float, float] = (90.0, 240.0),
    sample_rate: int = 24000,
) -> list[torch.Tensor]:
    """``n`` utterances from varied synthetic speakers: list of ``(T_i,)`` float32 tensors.

    Each speaker draws an f0 (log-uniform in ``f0_range``), a vocal-tract scale that grows with
    f0 (higher voices tend to come from shorter vocal tracts), a speaking rate and a jitter level.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    lo_d, hi_d = duration_range
    lo_f, hi_f = f0_range
    if not (0 < lo_d <= hi_d):
        raise ValueError(f"duration_range must satisfy 0 < low <= high, got {duration_range!r}")
    if not (0 < lo_f <= hi_f):
        raise ValueError(f"f0_range must satisfy 0 < low <= high, got {f0_range!r}")
    rng = as_rng(seed)
    out = []
    for _ in range(n):
        f0 = float(np.exp(rng.uniform(np.log(lo_f), np.log(hi_f))))
        scale = float(np.clip(1.0 + 0.2 * (np.log(f0) - np.log(110.0)) + rng.normal(0, 0.03), 0.85, 1.35))
        out.append(
            synth_speech(
                float(rng.uniform(lo_d, hi_d)),
                sample_rate,
                f0=f0,
                seed=int(rng.integers(2**31)),
                formant_scale=scale,
                speaking_rate=float(rng.uniform(0.85, 1.2)),
                jitter=float(rng.uniform(0.005, 0.015)),
            )
        )
    return out
