"""Noise generation, SNR mixing, rate/pitch perturbation, synthetic reverberation and the Augmenter."""

import math

import numpy as np
import pytest
import torch
from conftest import autocorr_f0
from scipy import signal

from flow_omni.audio.augment import AugmentConfig, Augmenter
from flow_omni.audio.noise import (
    NOISE_KINDS,
    babble,
    brown_noise,
    make_noise,
    measure_snr_db,
    mix_at_snr,
    pink_noise,
    white_noise,
)
from flow_omni.audio.perturb import add_reverb, pitch_shift, speed_perturb, synthetic_rir, time_stretch
from flow_omni.audio.synth import synth_corpus, synth_speech
from flow_omni.errors import AudioError, ConfigError

SR = 24000


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    return synth_speech(1.5, SR, f0=140.0, seed=1)


@pytest.fixture(scope="module")
def pool() -> list[torch.Tensor]:
    return synth_corpus(5, seed=4, duration_range=(0.8, 1.4))


def psd_slope_db_per_decade(x: torch.Tensor, lo: float = 100.0, hi: float = 8000.0) -> float:
    """Least-squares slope of 10·log10(PSD) against log10(f), on log-spaced band averages so
    every decade weighs the same (plain Welch bins would over-weight high frequencies)."""
    freqs, psd = signal.welch(x.double().numpy(), fs=SR, nperseg=4096)
    edges = np.logspace(np.log10(lo), np.log10(hi), 25)
    centres, levels = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        sel = (freqs >= a) & (freqs < b)
        if sel.any():
            centres.append(np.sqrt(a * b))
            levels.append(10 * np.log10(psd[sel].mean()))
    return float(np.polyfit(np.log10(centres), levels, 1)[0])


# ---------------------------------------------------------------- noise


@pytest.mark.parametrize(
    "fn,slope,tol",
    [(white_noise, 0.0, 1.0), (pink_noise, -10.0, 1.0), (brown_noise, -20.0, 1.5)],
    ids=["white", "pink", "brown"],
)
def test_coloured_noise_spectral_slope_and_normalisation(fn, slope, tol):
    x = fn(4 * SR, 0)
    assert x.shape == (4 * SR,) and x.dtype == torch.float32
    assert abs(float(x.double().mean())) < 1e-6
    assert abs(float(x.double().pow(2).mean().sqrt()) - 1.0) < 1e-5
    measured = psd_slope_db_per_decade(x)
    assert abs(measured - slope) < tol, f"slope {measured:.2f} dB/decade, expected {slope} ± {tol}"
    assert torch.equal(fn(1000, 3), fn(1000, 3))
    assert not torch.equal(fn(1000, 3), fn(1000, 4))


def test_babble_is_a_mix_of_talkers(pool):
    n = 2 * SR
    b = babble(pool, n, n_talkers=4, rng=0)
    assert b.shape == (n,)
    assert abs(float(b.double().pow(2).mean().sqrt()) - 1.0) < 1e-5
    assert torch.equal(b, babble(pool, n, n_talkers=4, rng=0))
    # Not any single talker: the best normalised cross-correlation with each looped source is low.
    bb = b.double().numpy()
    for u in pool:
        src = np.tile(u.double().numpy(), 3)
        corr = signal.correlate(src, bb[: u.shape[0]], mode="valid")
        csum = np.concatenate([[0.0], np.cumsum(src**2)])
        window_energy = csum[u.shape[0] :] - csum[: -u.shape[0]]  # sliding sum over each lag
        energy = np.sqrt(window_energy * np.sum(bb[: u.shape[0]] ** 2))
        assert np.max(np.abs(corr) / (energy + 1e-12)) < 0.8
    # Speech-like: its 20 ms energy envelope fluctuates far more than stationary white noise does.

    def envelope_cv(x):
        frames = x[: len(x) // 480 * 480].reshape(-1, 480)
        rms = np.sqrt((frames**2).mean(axis=1))
        return rms.std() / rms.mean()

    assert envelope_cv(bb) > 3 * envelope_cv(white_noise(n, 0).numpy())


def test_make_noise_dispatch_and_errors(pool):
    for kind in NOISE_KINDS:
        x = make_noise(kind, 5000, 1, utterances=pool)
        assert x.shape == (5000,) and torch.isfinite(x).all()
    with pytest.raises(ValueError, match="unknown noise kind 'violet'"):
        make_noise("violet", 100, 0)
    with pytest.raises(ValueError, match="babble.*utterances"):
        make_noise("babble", 100, 0)
    with pytest.raises(ValueError, match="num_samples"):
        white_noise(0, 0)
    with pytest.raises(ValueError, match="n_talkers"):
        babble(pool, 100, n_talkers=0)


# ---------------------------------------------------------------- SNR mixing


def test_measure_snr_db_known_value():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert measure_snr_db(x, 0.1 * x) == pytest.approx(20.0, abs=1e-5)
    with pytest.raises(AudioError, match="undefined"):
        measure_snr_db(x, torch.zeros(1000))


@pytest.mark.parametrize("kind", NOISE_KINDS)
@pytest.mark.parametrize("noise_len", [0.4, 1.0, 2.5], ids=["shorter", "equal", "longer"])
def test_mix_at_snr_is_exact(speech, pool, kind, noise_len):
    noise = make_noise(kind, int(noise_len * speech.shape[0]), 7, utterances=pool)
    for snr in (20.0, 10.0, 5.0, 0.0, -5.0):
        mix, scaled = mix_at_snr(speech, noise, snr, rng=3, return_noise=True)
        assert mix.shape == speech.shape and mix.dtype == torch.float32
        assert float(mix.abs().max()) <= 1.0
        # Both ways of reading the SNR: against the clean input, and from the mixture's parts.
        assert abs(measure_snr_db(mix - scaled, scaled) - snr) < 0.05
        if float((speech + scaled).abs().max()) <= 1.0:  # no clipping guard: the speech is untouched
            assert abs(measure_snr_db(speech, scaled) - snr) < 1e-3
            assert torch.allclose(mix - scaled, speech, atol=1e-6)


def test_mix_at_snr_clipping_guard_keeps_snr(speech):
    loud = speech * (0.98 / float(speech.abs().max()))
    noise = brown_noise(speech.shape[0], 0)
    mix, scaled = mix_at_snr(loud, noise, -5.0, rng=0, return_noise=True)
    assert float(mix.abs().max()) <= 1.0
    clean_part = mix - scaled
    gain = float(clean_part.double() @ loud.double() / (loud.double() @ loud.double()))
    assert gain < 0.9, "the guard should have scaled the mixture down"
    assert torch.allclose(clean_part, gain * loud, atol=1e-5)  # speech scaled, not distorted
    assert abs(measure_snr_db(clean_part, scaled) - (-5.0)) < 0.05


def test_mix_at_snr_rejects_bad_input(speech):
    noise = white_noise(speech.shape[0], 0)
    with pytest.raises(AudioError, match="speech is silent"):
        mix_at_snr(torch.zeros_like(speech), noise, 10.0)
    with pytest.raises(AudioError, match="noise is silent"):
        mix_at_snr(speech, torch.zeros(100), 10.0)
    with pytest.raises(ValueError, match="snr_db must be finite"):
        mix_at_snr(speech, noise, float("nan"))
    with pytest.raises(ValueError, match="snr_db must be finite"):
        mix_at_snr(speech, noise, float("inf"))
    with pytest.raises(AudioError, match="empty"):
        mix_at_snr(torch.zeros(0), noise, 10.0)
    nan_speech = speech.clone()
    nan_speech[10] = float("nan")
    with pytest.raises(AudioError, match="NaN"):
        mix_at_snr(nan_speech, noise, 10.0)
    with pytest.raises(AudioError, match=r"mono"):
        mix_at_snr(torch.stack([speech, speech]), noise, 10.0)


# ---------------------------------------------------------------- rate and pitch


def test_speed_perturb_changes_tempo_and_pitch(speech):
    f0 = autocorr_f0(speech.numpy(), SR)
    for factor in (1.1, 0.9):
        y = speed_perturb(speech, factor, SR)
        assert y.shape[0] == math.ceil(speech.shape[0] / factor)
        assert abs(autocorr_f0(y.numpy(), SR) / f0 - factor) < 0.02
    with pytest.raises(ValueError, match="> 0"):
        speed_perturb(speech, 0.0, SR)
    with pytest.raises(ValueError, match="> 0"):
        speed_perturb(speech, float("nan"), SR)


def test_time_stretch_changes_length_not_pitch(speech):
    f0 = autocorr_f0(speech.numpy(), SR)
    y = time_stretch(speech, 1.25)
    assert abs(y.shape[0] / speech.shape[0] - 1 / 1.25) < 0.01
    assert abs(autocorr_f0(y.numpy(), SR) / f0 - 1) < 0.02
    with pytest.raises(ValueError, match="> 0"):
        time_stretch(speech, -1.0)


def test_pitch_shift_changes_pitch_not_length(speech):
    f0 = autocorr_f0(speech.numpy(), SR)
    y = pitch_shift(speech, 2.0, SR)
    assert y.shape == speech.shape
    assert abs(autocorr_f0(y.numpy(), SR) / f0 - 2 ** (2 / 12)) < 0.02  # +12.2 %
    with pytest.raises(ValueError, match="semitones"):
        pitch_shift(speech, float("nan"), SR)


# ---------------------------------------------------------------- reverberation


def schroeder_rt60(h: np.ndarray, sr: int) -> float:
    """RT60 from a line fitted to the backward-integrated energy decay curve between -5 and
    -25 dB (ISO 3382 "T20", extrapolated to 60 dB)."""
    edc = np.cumsum((h.astype(np.float64) ** 2)[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    i0, i1 = int(np.argmax(edc_db <= -5)), int(np.argmax(edc_db <= -25))
    slope = np.polyfit(np.arange(i0, i1) / sr, edc_db[i0:i1], 1)[0]
    return -60.0 / slope


@pytest.mark.parametrize("rt60", [0.25, 0.6, 1.2])
@pytest.mark.parametrize("drr", [0.0, 6.0])
def test_rir_decay_matches_rt60(rt60, drr):
    h = synthetic_rir(SR, rt60, 0, direct_to_reverb_db=drr).numpy()
    assert h.shape == (math.ceil((rt60 + 0.05) * SR),)
    assert abs(float(np.sum(h.astype(np.float64) ** 2)) - 1.0) < 1e-5
    assert int(np.argmax(np.abs(h))) == 0  # direct path first and strongest: no added delay
    assert abs(schroeder_rt60(h, SR) / rt60 - 1) < 0.2
    measured_drr = 10 * np.log10(h[0] ** 2 / np.sum(h[1:].astype(np.float64) ** 2))
    assert abs(measured_drr - drr) < 0.01
    assert torch.equal(synthetic_rir(SR, rt60, 5), synthetic_rir(SR, rt60, 5))


def test_add_reverb_keeps_length_and_rms_and_smears(speech):
    y = add_reverb(speech, SR, 0.6, rng=0)
    assert y.shape == speech.shape
    assert abs(float(y.pow(2).mean().sqrt() / speech.pow(2).mean().sqrt()) - 1) < 1e-4
    assert torch.equal(y, add_reverb(speech, SR, 0.6, rng=0))
    # The reverberant tail fills the silences between segments.
    quiet = speech.abs() < 1e-4
    assert float(y[quiet].abs().mean()) > 10 * float(speech[quiet].abs().mean() + 1e-6)
    with pytest.raises(ValueError, match="rt60"):
        add_reverb(speech, SR, 0.0)
    with pytest.raises(ValueError, match="rt60"):
        synthetic_rir(SR, float("nan"))


# ---------------------------------------------------------------- Augmenter


def test_augmenter_deterministic_and_records_steps(speech, pool):
    aug = Augmenter(AugmentConfig(p_noise=1.0, p_speed=0.5, p_pitch=0.5, p_reverb=0.5), SR, babble_pool=pool)
    outs = [aug(speech, rng=seed) for seed in range(6)]
    again = [aug(speech, rng=seed) for seed in range(6)]
    for (a, ia), (b, ib) in zip(outs, again):
        assert torch.equal(a, b) and ia == ib
        assert ia["applied"][-1] == "noise" and ia["noise_kind"] in NOISE_KINDS
        assert 0.0 <= ia["snr_db"] <= 20.0
        assert float(a.abs().max()) <= 1.0 and torch.isfinite(a).all()
    assert not torch.equal(outs[0][0], outs[1][0])
    assert len({tuple(info["applied"]) for _, info in outs}) > 1  # probabilities are per call


def test_augmenter_noise_only_hits_recorded_snr(speech, pool):
    cfg = AugmentConfig(p_noise=1.0, p_speed=0.0, p_pitch=0.0, p_reverb=0.0, snr_db_range=[5.0, 5.0])
    for seed in range(4):
        out, info = Augmenter(cfg, SR, babble_pool=pool)(speech, rng=seed)
        assert info["applied"] == ["noise"] and info["snr_db"] == 5.0
        assert abs(measure_snr_db(speech, out - speech) - 5.0) < 0.05


def test_augmenter_all_steps_and_none(speech):
    cfg = AugmentConfig(p_noise=1.0, p_speed=1.0, p_pitch=1.0, p_reverb=1.0, noise_kinds=["pink"])
    out, info = Augmenter(cfg, SR)(speech, rng=0)
    assert info["applied"] == ["speed", "pitch", "reverb", "noise"]
    assert info["speed_factor"] == round(info["speed_factor"], 3)  # exactly what was applied
    assert out.shape[0] == math.ceil(speech.shape[0] / info["speed_factor"] - 1e-9)
    off = AugmentConfig(p_noise=0.0, p_speed=0.0, p_pitch=0.0, p_reverb=0.0)
    same, info = Augmenter(off, SR)(speech, rng=0)
    assert torch.equal(same, speech) and info == {"applied": []}


def test_augmenter_default_babble_pool(speech):
    cfg = AugmentConfig(p_noise=1.0, noise_kinds=["babble"], p_speed=0.0, p_pitch=0.0, p_reverb=0.0)
    out, info = Augmenter(cfg, SR)(speech, rng=1)
    assert info["noise_kind"] == "babble" and torch.isfinite(out).all()


def test_augment_config_roundtrip_and_validation():
    cfg = AugmentConfig(snr_db_range=[-5.0, 10.0], noise_kinds=["white"])
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    assert AugmentConfig.from_yaml(cfg.to_yaml()) == cfg
    with pytest.raises(ConfigError, match="unknown kind"):
        AugmentConfig(noise_kinds=["white", "violet"])
    with pytest.raises(ConfigError, match="probability"):
        AugmentConfig(p_noise=1.5)
    with pytest.raises(ConfigError, match="low .* above high"):
        AugmentConfig(snr_db_range=[20.0, 0.0])
    with pytest.raises(ConfigError, match="> 0"):
        AugmentConfig(speed_range=[0.0, 1.1])
    with pytest.raises(ConfigError, match="did you mean 'p_noise'"):
        AugmentConfig.from_dict({"p_nois": 0.5})


def test_augmenter_rejects_bad_audio(speech):
    aug = Augmenter(AugmentConfig(p_noise=1.0, noise_kinds=["white"]), SR)
    with pytest.raises(AudioError, match="silent"):
        aug(torch.zeros(SR), rng=0)
    with pytest.raises(AudioError, match="empty"):
        aug(torch.zeros(0), rng=0)
    bad = speech.clone()
    bad[5] = float("inf")
    with pytest.raises(AudioError, match="NaN/Inf"):
        aug(bad, rng=0)
