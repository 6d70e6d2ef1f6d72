"""Coarse-to-fine continuous tokens: a k-means code by softmax, refined from its centroid by the flow head."""

from __future__ import annotations

import pytest
import torch

from flow_omni import FlowOmni, FlowOmniConfig, Sample
from flow_omni.audio.synth import synth_corpus
from flow_omni.errors import ConfigError
from flow_omni.models.coarse_fine_speech import CoarseFineSpeech
from flow_omni.training.quicktrain import quick_train

TEXTS = ["one two", "three four", "five six"]


@pytest.fixture(scope="module")
def corpus():
    return synth_corpus(len(TEXTS), seed=1, duration_range=(0.5, 0.7))


def coarse_fine_model(corpus, **flow):
    torch.manual_seed(0)
    config = FlowOmniConfig.preset("tiny", tokens="coarse_fine", quantizer={"codebook_size": 16, "iterations": 10})
    if flow:
        config = FlowOmniConfig.from_dict({**config.to_dict(), "flow": {**config.flow.to_dict(), **flow}})
    model = FlowOmni(config)
    model.fit_speech_stats(corpus)
    model.fit_speech_head([model.encode_speech(a) for a in corpus])
    return model


def test_config_and_parts(corpus):
    model = coarse_fine_model(corpus)
    assert isinstance(model.speech, CoarseFineSpeech)
    assert model.config.quantizer["codebook_size"] == 16 and model.speech.quantizer.is_fitted
    assert model.speech.payload_dim == model.config.speech.token_dim  # it reads and speaks continuous tokens
    assert model.config.layout.speech_tail == 0
    head = dict(model.speech.output_head.named_children())
    assert set(head) == {"flow", "codes", "code_embed"}  # all in the trainable group speech_head
    with pytest.raises(ConfigError, match="needs a quantizer"):
        FlowOmniConfig.preset("tiny", tokens="coarse_fine")
    base = FlowOmniConfig.preset("tiny", tokens="coarse_fine", quantizer={"codebook_size": 8})
    with pytest.raises(ConfigError, match="own_previous must be 0"):
        FlowOmniConfig.from_dict({**base.to_dict(), "flow": {**base.flow.to_dict(), "own_previous": 0.5}})


def test_loss_is_code_cross_entropy_plus_flow_loss_from_the_centroid(corpus):
    model = coarse_fine_model(corpus).eval()
    speech = model.speech
    target = model.encode_speech(corpus[0])[:6]
    cond = torch.randn(6, model.width)
    codes = speech.quantizer.encode(target)[:, 0]
    centre = speech.quantizer.decode(codes[:, None])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    got = speech.loss(cond, target, torch.zeros_like(target), generator=g1)
    ce = torch.nn.functional.cross_entropy(speech.output_head.codes(cond), codes)
    flow = speech.flow_head.loss(target, cond + speech.output_head.code_embed(codes), prev=centre, generator=g2)
    assert torch.allclose(got, ce + flow, atol=1e-6)
    # the previous token plays no part: the prior starts at the target's code's centroid
    g1.manual_seed(3)
    assert torch.allclose(speech.loss(cond, target, torch.randn_like(target), generator=g1), got, atol=1e-6)


def test_greedy_sample_refines_the_argmax_codes_centroid(corpus):
    model = coarse_fine_model(corpus).eval()
    speech = model.speech
    cond = torch.randn(4, model.width)
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    out = speech.sample(
        cond, torch.randn(4, speech.payload_dim), gens, temperature=0.0, steps=3, solver="euler", cfg_scale=1.0
    )
    codes = speech.output_head.codes(cond).argmax(-1)
    want = speech.flow_head.sample(
        cond + speech.output_head.code_embed(codes),
        prev=speech.quantizer.decode(codes[:, None]),
        steps=3,
        solver="euler",
        temperature=0.0,
        noise=torch.zeros(4, speech.payload_dim),
    )
    assert torch.allclose(out, want, atol=1e-6)
    # An untrained flow head outputs zero velocity: the greedy token is the centroid itself.
    assert torch.allclose(out, speech.quantizer.decode(codes[:, None]), atol=1e-6)


def test_sampled_codes_follow_each_rows_generator(corpus):
    model = coarse_fine_model(corpus).eval()
    speech = model.speech
    with torch.no_grad():  # a flat softmax, so that the draws differ
        speech.output_head.codes.weight.zero_()
    cond = torch.randn(3, model.width)
    prev = torch.zeros(3, speech.payload_dim)

    def draw(seeds):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        return speech.sample(cond, prev, gens, temperature=1.0, steps=2, solver="euler", cfg_scale=1.0)

    a, b = draw([1, 2, 3]), draw([1, 2, 3])
    assert torch.equal(a, b)
    c = draw([1, 5, 3])
    assert torch.equal(a[0], c[0]) and torch.equal(a[2], c[2]) and not torch.equal(a[1], c[1])


def test_coarse_fine_trains_and_generates(corpus, tmp_path):
    model = coarse_fine_model(corpus)
    samples = []
    for t, a in zip(TEXTS, corpus):
        samples.append(Sample("T2A", prompt_text=t, target_text=t, target_speech=model.encode_speech(a)))
        samples.append(Sample("A2T", prompt_audio=model.prepare_audio(a), target_text=t))
    hist = quick_train(model, samples, steps=60, batch_size=6, lr=3e-3)
    assert hist[-1]["flow"] < 0.5 * hist[0]["flow"] and hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    out = model.generate([Sample("T2A", prompt_text=TEXTS[0])], speech_temperature=0.0, max_new_positions=40)
    assert out[0].speech_tokens.shape[1] == model.config.speech.token_dim
    model.save_pretrained(tmp_path / "m")
    again = FlowOmni.from_pretrained(tmp_path / "m")
    assert isinstance(again.speech, CoarseFineSpeech)
    assert torch.equal(
        again.speech.quantizer.decode(torch.arange(16)[:, None]),
        model.speech.quantizer.decode(torch.arange(16)[:, None]),
    )
    redo = again.generate([Sample("T2A", prompt_text=TEXTS[0])], speech_temperature=0.0, max_new_positions=40)
    assert torch.allclose(redo[0].speech_tokens, out[0].speech_tokens, atol=1e-5)
