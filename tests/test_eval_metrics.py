"""Evaluation metrics: log-mel distance, MCD (with DTW), QA accuracy, streaming latency, Whisper ASR."""

import math

import numpy as np
import pytest
import torch

from flow_omni.audio.mel import LOG_MEL_FLOOR
from flow_omni.errors import FlowOmniError, MelShapeError
from flow_omni.eval.asr import ASRUnavailableError, WhisperASR
from flow_omni.eval.audio_metrics import (
    MCD_CONSTANT,
    dtw_path,
    mel_cepstral_distortion,
    mel_cepstrum,
    mel_distance,
    qa_accuracy,
)
from flow_omni.eval.timing import Latency, measure_latency, real_time_factor

# ---- mel distance ----------------------------------------------------------------------------


def test_mel_distance_hand_computed():
    g = torch.tensor([[0.0, 1.0, 2.0], [3.0, -1.0, 9.0]])
    r = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    # common frames 2: |0-1| + |1-1| + |3-0| + |-1-1| = 6 over 4 values
    assert mel_distance(g, r) == pytest.approx(1.5)
    assert mel_distance(r, g) == pytest.approx(1.5)
    assert mel_distance(g, g) == 0.0


def test_mel_distance_floors_both_sides():
    g = torch.tensor([[LOG_MEL_FLOOR - 50.0, 0.0]])
    r = torch.tensor([[LOG_MEL_FLOOR, LOG_MEL_FLOOR - 3.0]])
    # frame 0: both at the floor → 0; frame 1: |0 - floor|
    assert mel_distance(g, r) == pytest.approx(-LOG_MEL_FLOOR / 2)
    assert mel_distance(np.zeros((2, 3)), np.ones((2, 5))) == pytest.approx(1.0)  # numpy accepted


def test_mel_distance_rejects_bad_shapes():
    with pytest.raises(MelShapeError):
        mel_distance(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(MelShapeError):
        mel_distance(torch.zeros(3, 0), torch.zeros(3, 4))


# ---- MCD -------------------------------------------------------------------------------------


def _smooth_mel(n_mels=20, frames=60, seed=0):
    g = np.random.default_rng(seed)
    walk = np.cumsum(g.normal(size=(n_mels, frames)), axis=1)
    return torch.tensor(2.0 * np.tanh(walk / 4.0) - 5.0, dtype=torch.float32)  # in [-7, -3], above the floor


def test_mcd_identical_is_zero():
    m = _smooth_mel()
    assert mel_cepstral_distortion(m, m) == pytest.approx(0.0, abs=1e-9)
    assert mel_cepstral_distortion(m, m, align="dtw") == pytest.approx(0.0, abs=1e-9)


def test_mcd_ignores_a_constant_offset():
    m = _smooth_mel()
    # A gain change shifts every log-mel bin equally: only c0 moves, and c0 is excluded.
    assert mel_cepstral_distortion(m, m + 3.0) == pytest.approx(0.0, abs=1e-9)
    # mel_distance does see it.
    assert mel_distance(m, m + 3.0) == pytest.approx(3.0, abs=1e-5)


def test_mcd_hand_computed_two_bins():
    # 2 mel bins: orthonormal DCT-II gives c1 = (x0 - x1) / sqrt(2).
    a = torch.tensor([[0.0], [0.0]])
    b = torch.tensor([[1.0], [-1.0]])
    # Δc1 = -sqrt(2) → MCD = 10/ln10 · sqrt(2 · 2) = 20 / ln 10
    assert mel_cepstral_distortion(a, b, n_coeffs=2) == pytest.approx(20 / math.log(10))


def test_mcd_hand_computed_four_bins_two_frames():
    # N = 4: c_k = sqrt(2/4) Σ x_n cos(π k (2n+1) / 8) for k >= 1.
    a = torch.zeros(4, 2)
    b = torch.zeros(4, 2)
    b[0, 0] = 1.0  # frame 0: an impulse in bin 0
    b[:, 1] = torch.tensor([1.0, 1.0, -1.0, -1.0])  # frame 1: a step

    def c(x, k):
        return math.sqrt(0.5) * sum(x[n] * math.cos(math.pi * k * (2 * n + 1) / 8) for n in range(4))

    d0 = math.sqrt(sum(c([1, 0, 0, 0], k) ** 2 for k in (1, 2)))
    d1 = math.sqrt(sum(c([1, 1, -1, -1], k) ** 2 for k in (1, 2)))
    expected = 10 / math.log(10) * math.sqrt(2) * (d0 + d1) / 2
    assert mel_cepstral_distortion(a, b, n_coeffs=3) == pytest.approx(expected)
    assert MCD_CONSTANT == pytest.approx(10 / math.log(10) * math.sqrt(2))
    # c0 of the impulse is sqrt(1/4) · 1
    assert mel_cepstrum(b, 3)[0, 0] == pytest.approx(0.5)


def test_dtw_beats_truncation_on_a_time_stretched_copy():
    m = _smooth_mel(frames=40)
    stretch = torch.floor(torch.arange(60) / 1.5).long()  # every frame 1.5x as long
    slow = m[:, stretch]
    truncated = mel_cepstral_distortion(m, slow, align="truncate")
    warped = mel_cepstral_distortion(m, slow, align="dtw")
    assert warped == pytest.approx(0.0, abs=1e-9)  # a repeated-frame copy aligns exactly
    assert truncated > 1.0


def test_dtw_path_matches_brute_force():
    cost = np.random.default_rng(3).random((7, 9))
    i, j = dtw_path(cost)
    assert (i[0], j[0]) == (0, 0) and (i[-1], j[-1]) == (6, 8)
    steps = set(zip(np.diff(i), np.diff(j)))
    assert steps <= {(0, 1), (1, 0), (1, 1)}
    acc = np.full((8, 10), np.inf)
    acc[0, 0] = 0.0
    for a in range(1, 8):
        for b in range(1, 10):
            acc[a, b] = cost[a - 1, b - 1] + min(acc[a - 1, b], acc[a, b - 1], acc[a - 1, b - 1])
    assert cost[i, j].sum() == pytest.approx(acc[7, 9])


def test_mcd_rejects_bad_input():
    with pytest.raises(MelShapeError):
        mel_cepstral_distortion(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="n_coeffs"):
        mel_cepstral_distortion(torch.zeros(4, 3), torch.zeros(4, 3), n_coeffs=5)
    with pytest.raises(ValueError, match="align"):
        mel_cepstral_distortion(torch.zeros(4, 3), torch.zeros(4, 3), n_coeffs=3, align="nearest")


# ---- QA accuracy -----------------------------------------------------------------------------


def test_qa_accuracy():
    refs = ["seven", "blue", "twenty four", "monday"]
    assert qa_accuracy(["The answer is 7.", "It's blue!", "24", "tuesday"], refs) == 0.75
    assert qa_accuracy(["seven or eight", "not blue", "", "monday please"], refs) == 0.0
    assert qa_accuracy(["seven"], ["seven"]) == 1.0
    with pytest.raises(ValueError):
        qa_accuracy(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        qa_accuracy([], [])


# ---- per-item error rates --------------------------------------------------------------------


def test_item_errors_average_to_the_corpus_rate():
    """Each item's edits over the mean reference length: their mean is the corpus CER / WER, by hand here."""
    from flow_omni.eval.text_metrics import cer, item_errors, mean_reference_length, wer

    refs = ["Seven cats sat.", "where did oscar put my dirty car", "hello world", "a b c d e"]
    hyps = ["seven", "where did oscar put my guitar", "", "a b x d e f g"]
    words = item_errors(refs, hyps, "word")
    # word edits 2, 2, 2, 3 over reference lengths 3, 7, 2, 5 (mean 4.25)
    assert words == pytest.approx([2 / 4.25, 2 / 4.25, 2 / 4.25, 3 / 4.25])
    assert np.mean(words) == pytest.approx(wer(refs, hyps))
    assert np.mean(item_errors(refs, hyps)) == pytest.approx(cer(refs, hyps))
    assert item_errors(refs, refs) == [0.0] * 4
    # On a whole test set's scale (mean 4.25 words here), for systems scored on the parts they spoke.
    assert mean_reference_length(refs, "word") == 4.25 and mean_reference_length(["ab c"]) == 4
    assert item_errors(refs[:2], hyps[:2], "word", mean_length=4.25) == pytest.approx(words[:2])
    with pytest.raises(ValueError, match="expected 'char' or 'word'"):
        item_errors(refs, hyps, "phone")


# ---- latency ---------------------------------------------------------------------------------


def test_real_time_factor():
    assert real_time_factor(1.0, 4.0) == 0.25
    assert real_time_factor(1.0, 0.0) == math.inf
    with pytest.raises(ValueError):
        real_time_factor(-1.0, 1.0)


@pytest.fixture(scope="module")
def speaking_model():
    from flow_omni import FlowOmni, FlowOmniConfig
    from flow_omni.layout import STATE_GEN, STATE_START

    torch.manual_seed(0)
    model = FlowOmni(FlowOmniConfig.preset("tiny")).eval()
    # Untrained, the state head rarely starts speaking; bias it to start at once and keep going.
    with torch.no_grad():
        model.state_head.weight.zero_()
        model.state_head.bias.zero_()
        model.state_head.bias[STATE_START] = 10.0
        model.state_head.bias[STATE_GEN] = 10.0
    return model


@pytest.mark.parametrize("with_vocoder", [False, True])
def test_latency_fields_are_consistent(speaking_model, with_vocoder):
    from flow_omni.layout import Sample
    from flow_omni.vocoder import Vocoder, VocoderConfig

    voc = Vocoder(VocoderConfig(dim=32, intermediate_dim=64, num_layers=1)).eval() if with_vocoder else None
    lat = measure_latency(
        speaking_model,
        Sample("T2A", prompt_text="hello"),
        vocoder=voc,
        chunk_tokens=2,
        max_new_positions=12,
        seed=0,
        steps=2,
    )
    assert isinstance(lat, Latency)
    assert lat.first_text_s is not None and lat.first_audio_s is not None
    assert 0 < lat.first_text_s <= lat.total_s
    assert 0 < lat.first_audio_s <= lat.total_s
    assert lat.audio_s > 0
    assert lat.rtf == pytest.approx(lat.total_s / lat.audio_s)
    # At most 12 speech tokens of r=4 frames each (the first position is "start").
    max_s = 12 * 4 / speaking_model.config.speech.mel.frame_rate
    assert lat.audio_s <= max_s + 0.05


# ---- Whisper ---------------------------------------------------------------------------------

_WHISPER = WhisperASR.available()
CLEAR_SENTENCE = "please open the window in the kitchen."
#: Whisper tiny.en (int8, greedy) transcribed this sentence in espeak's en-us voice (and in en,
#: en-gb-x-rp, en-us+f3/m1/m3, en+klatt2) with WER 0; allow one of its 7 words wrong.
CLEAR_SENTENCE_MAX_WER = 0.15


def _espeak_or_none(text):
    try:
        from flow_omni.data.espeak import synthesize

        return synthesize(text, "en-us")
    except (ImportError, OSError, FlowOmniError):
        return None


@pytest.mark.skipif(not _WHISPER, reason=f"Whisper ASR unavailable: {_WHISPER.reason}")
def test_whisper_transcribes_speech():
    from flow_omni.eval.text_metrics import wer

    asr = WhisperASR()
    audio = _espeak_or_none(CLEAR_SENTENCE)
    if audio is None:  # no espeak: a synthetic utterance only checks that the pipeline runs
        from flow_omni.audio.synth import synth_corpus

        (audio,) = synth_corpus(1, seed=0)
        assert isinstance(asr.transcribe(audio), str)
        return
    hyp, empty = asr.transcribe_many([audio, torch.zeros(0)])
    assert empty == ""
    assert wer([CLEAR_SENTENCE], [hyp]) <= CLEAR_SENTENCE_MAX_WER, hyp


def test_whisper_unavailable_error_names_the_extra(monkeypatch):
    import flow_omni.eval.asr as asr_mod

    monkeypatch.setattr(asr_mod, "_check", lambda: asr_mod.Availability(False, "faster-whisper is not installed"))
    assert not WhisperASR.available()
    with pytest.raises(ASRUnavailableError, match=r"flow_omni\[eval\]"):
        WhisperASR()
