"""Discrete-token FlowOmni (k-means / RVQ codes, Mini-Omni per-level delay) on the tiny preset."""

from __future__ import annotations

import pytest
import torch

from flow_omni import FlowOmni, FlowOmniConfig, Sample
from flow_omni.audio.synth import synth_corpus
from flow_omni.errors import ConfigError
from flow_omni.eval.teacher_forcing import teacher_forced_speech
from flow_omni.layout import STATE_GEN, STATE_PAD, STATE_START, STATE_STOP
from flow_omni.models.speech_codes import CodeSpeech
from flow_omni.training.quicktrain import quick_train

TEXTS = ["one two", "three four", "five six"]


@pytest.fixture(scope="module")
def corpus():
    return synth_corpus(len(TEXTS), seed=1, duration_range=(0.5, 0.7))


def discrete_model(corpus, kind="rvq", **q):
    torch.manual_seed(0)
    quantizer = {"codebook_size": 16, "iterations": 10, **q}
    model = FlowOmni(FlowOmniConfig.preset("tiny", tokens=kind, quantizer=quantizer))
    model.fit_speech_stats(corpus)
    model.fit_speech_head([model.encode_speech(a) for a in corpus])
    return model


def test_config_switch_and_delay(corpus):
    model = discrete_model(corpus, num_levels=3)
    assert isinstance(model.speech, CodeSpeech) and model.speech.payload_dim == 3
    assert model.config.layout.speech_tail == 2  # the deepest level lags two positions
    assert FlowOmniConfig.preset("tiny", tokens="kmeans", quantizer={"codebook_size": 8}).layout.speech_tail == 0
    with pytest.raises(ConfigError, match="needs a quantizer"):
        FlowOmniConfig.preset("tiny", tokens="rvq")
    with pytest.raises(ConfigError, match="continuous"):
        FlowOmniConfig.preset("tiny", quantizer={"codebook_size": 8})


def test_payloads_delay_levels_and_round_trip(corpus):
    model = discrete_model(corpus, num_levels=3)
    tokens = model.encode_speech(corpus[0])[:5]  # (5, D)
    n, tail = tokens.shape[0], 2
    speech = torch.zeros(1, n + tail + 3, tokens.shape[1])
    speech[0, 1 : 1 + n] = tokens
    state = torch.tensor([[STATE_START] + [STATE_GEN] * (n + tail) + [STATE_STOP, STATE_PAD]])
    pay = model.speech.payloads(speech, state)[0]
    codes = model.speech.quantizer.encode(tokens)
    for lvl in range(3):  # level l of token t sits at speech position t + l
        assert torch.equal(pay[1 + lvl : 1 + lvl + n, lvl], codes[:, lvl])
        assert (pay[1 : 1 + lvl, lvl] == model.speech.pad).all()
    gen_rows = pay[1 : 1 + n + tail]
    assert torch.equal(model.speech.to_tokens(gen_rows), model.speech.quantizer(tokens))  # exact reassembly
    assert model.speech.to_tokens(gen_rows[:3]).shape[0] == 1  # streaming: only complete tokens


@pytest.mark.parametrize("kind,q", [("rvq", {"num_levels": 2}), ("kmeans", {})])
def test_discrete_variant_trains_and_generates(corpus, kind, q, tmp_path):
    model = discrete_model(corpus, kind, **q)
    samples = []
    for t, a in zip(TEXTS, corpus):
        samples.append(Sample("T2A", prompt_text=t, target_text=t, target_speech=model.encode_speech(a)))
        samples.append(Sample("A2T", prompt_audio=model.prepare_audio(a), target_text=t))
    hist = quick_train(model, samples, steps=60, batch_size=6, lr=3e-3)
    assert hist[-1]["flow"] < 0.5 * hist[0]["flow"] and hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    out = model.generate(
        [Sample("T2A", prompt_text=TEXTS[0]), Sample("A2T", prompt_audio=model.prepare_audio(corpus[1]))],
        speech_temperature=0.0,
        max_new_positions=60,
    )
    tts = out[0]
    if tts.speech_tokens.shape[0]:
        # every generated token is a codebook point: decode(encode(x)) == x
        assert torch.allclose(model.speech.quantizer(tts.speech_tokens), tts.speech_tokens, atol=1e-5)
        assert tts.mel.shape[0] == 100
    streamed = [
        e.tokens
        for e in model.stream(Sample("T2A", prompt_text=TEXTS[0]), speech_temperature=0.0, max_new_positions=60)
        if e.kind == "mel"
    ]
    got = torch.cat(streamed) if streamed else torch.zeros(0, tts.speech_tokens.shape[1])
    assert torch.equal(got, tts.speech_tokens)
    model.save_pretrained(tmp_path / "m")
    again = FlowOmni.from_pretrained(tmp_path / "m")
    assert again.speech.needs_fit and again.speech.quantizer.is_fitted
    assert torch.equal(
        again.generate([Sample("T2A", prompt_text=TEXTS[0])], speech_temperature=0.0, max_new_positions=60)[
            0
        ].speech_tokens,
        tts.speech_tokens,
    )
    model.train()
    batch = model.collate(samples[:2])
    with torch.no_grad():
        assert again.train()(batch).loss.item() == pytest.approx(model(batch).loss.item(), rel=1e-6)


def test_teacher_forced_codes_follow_the_level_delay(corpus):
    """RVQ with Mini-Omni's per-level delay: level l of token j is sampled l positions after level 0, from
    a history that holds reference tokens up to j + l - 1. So changing the reference from token h on
    leaves tokens before h - (levels - 1) as they were, and the output has the reference's frames."""
    model = discrete_model(corpus, num_levels=3)
    r, tail = model.config.speech.r, model.config.layout.speech_tail
    ref = model.speech_tokenizer.mel(corpus[0])
    out = teacher_forced_speech(model, [TEXTS[0]], [ref])[0]
    assert out.shape == ref.shape
    h = ref.shape[-1] // r // 2
    changed = ref.clone()
    changed[:, h * r :] = changed[:, h * r :].flip(-1)
    again = teacher_forced_speech(model, [TEXTS[0]], [changed])[0]
    keep = (h - tail) * r
    assert torch.equal(again[:, :keep], out[:, :keep])
    assert not torch.equal(again, out)
