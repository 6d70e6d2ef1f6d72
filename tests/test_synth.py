"""The formant synthesiser makes deterministic, speech-like audio: pitch at f0, formants, pauses."""

import numpy as np
import pytest
import torch
from conftest import autocorr_f0

from flow_omni.audio.synth import VOWEL_FORMANTS, synth_corpus, synth_speech

SR = 24000


def band_energy(x: np.ndarray, sr: int, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.shape[0], 1 / sr)
    return float(spec[(freqs >= lo) & (freqs < hi)].sum())


@pytest.mark.parametrize("duration,sr", [(1.5, SR), (0.73, SR), (2.0, 16000), (0.05, SR)])
def test_length_dtype_and_level(duration, sr):
    x = synth_speech(duration, sr, seed=3)
    assert x.shape == (round(duration * sr),)
    assert x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert abs(float(x.abs().max()) - 0.5) < 1e-6
    rms_db = 20 * np.log10(float(x.pow(2).mean().sqrt()))
    assert -35 < rms_db < -10, rms_db  # speech-like crest factor, not a sine and not a click


def test_deterministic_per_seed_and_varies_across_seeds():
    a, b, c = synth_speech(seed=7), synth_speech(seed=7), synth_speech(seed=8)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-3)
    gen_a = synth_speech(seed=np.random.default_rng(5))
    gen_b = synth_speech(seed=np.random.default_rng(5))
    assert torch.equal(gen_a, gen_b)


@pytest.mark.parametrize("f0", [90.0, 140.0, 220.0])
def test_pitch_matches_requested_f0(f0):
    x = synth_speech(1.5, SR, f0=f0, seed=1).numpy()
    est = autocorr_f0(x, SR)
    assert abs(est / f0 - 1) < 0.10, (f0, est)


def test_has_pauses_and_unvoiced_frication():
    x = synth_speech(3.0, SR, seed=3).numpy()
    frame = int(0.02 * SR)
    frames = x[: len(x) // frame * frame].reshape(-1, frame)
    rms = np.sqrt((frames**2).mean(axis=1))
    assert (rms < 1e-3 * rms.max()).any(), "expected silent stretches (leading silence / pauses)"
    # Fricative frames: most energy above 3 kHz, unlike vowels whose energy sits below 1 kHz.
    hf_ratio = np.array([band_energy(f, SR, 3000, 12000) / (band_energy(f, SR, 0, 12000) + 1e-20) for f in frames])
    loud = rms > 0.05 * rms.max()
    assert (hf_ratio[loud] > 0.7).sum() >= 3
    assert (hf_ratio[loud] < 0.1).sum() >= 30


def test_vowel_formants_shape_the_spectrum():
    """/i/ has F2 ≈ 2.3 kHz and a low F1; /a/ has F1 ≈ 0.7 kHz: the band energies must say so."""
    i = synth_speech(1.0, SR, seed=0, vowels="i").numpy()
    a = synth_speech(1.0, SR, seed=0, vowels="a").numpy()

    def ratio(x):
        return band_energy(x, SR, 2000, 2700) / band_energy(x, SR, 550, 900)

    assert ratio(i) > 10 * ratio(a)
    assert set(VOWEL_FORMANTS) >= set("aeiou")


def test_corpus_varied_and_deterministic():
    corpus = synth_corpus(4, seed=2, duration_range=(0.8, 1.2), f0_range=(90, 240))
    again = synth_corpus(4, seed=2, duration_range=(0.8, 1.2), f0_range=(90, 240))
    assert len(corpus) == 4
    assert all(torch.equal(a, b) for a, b in zip(corpus, again))
    assert all(0.8 * SR - 1 <= u.shape[0] <= 1.2 * SR + 1 for u in corpus)
    f0s = [autocorr_f0(u.numpy(), SR) for u in corpus]
    assert all(80 < f < 265 for f in f0s), f0s
    assert max(f0s) / min(f0s) > 1.2, f0s  # different speakers, not one voice four times
    assert synth_corpus(0) == []


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"duration": 0.0}, "duration"),
        ({"duration": float("nan")}, "duration"),
        ({"f0": float("nan")}, "f0"),
        ({"f0": 10.0}, "f0"),
        ({"vowels": "axz"}, "vowels"),
        ({"vowels": ""}, "vowels"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"speaking_rate": -1.0}, "speaking_rate"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synth_speech(**kwargs)


def test_bad_corpus_arguments_raise():
    with pytest.raises(ValueError, match="duration_range"):
        synth_corpus(2, duration_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="n must be"):
        synth_corpus(-1)
    with pytest.raises(TypeError, match="rng"):
        synth_speech(seed="abc")
