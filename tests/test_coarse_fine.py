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


def with_a_field(model):
    """A fresh flow head outputs zero velocity whatever its condition: give it a field, so that what it
    is conditioned on shows in its loss and samples."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.speech.flow_head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
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


def test_read_centroids_reads_each_token_as_its_codes_centroid(corpus):
    plain = coarse_fine_model(corpus)
    config = FlowOmniConfig.from_dict({**plain.config.to_dict(), "speech_input_centroids": True})
    model = FlowOmni(config)
    model.load_state_dict(plain.state_dict())
    tokens = plain.encode_speech(corpus[0])[None, :5]  # (1, 5, D)
    centroids = plain.speech.quantizer(tokens)
    assert not torch.allclose(plain.speech.embed(tokens), plain.speech.embed(centroids))
    assert torch.equal(model.speech.embed(tokens), plain.speech.embed(centroids))
    with pytest.raises(ConfigError, match="only tokens='coarse_fine'"):
        FlowOmniConfig.preset("tiny", speech_input_centroids=True)


def test_loss_is_code_cross_entropy_and_flow_loss_from_the_centroid(corpus):
    model = with_a_field(coarse_fine_model(corpus)).eval()
    speech = model.speech
    target = model.encode_speech(corpus[0])[:6]
    cond = torch.randn(6, model.width)
    codes = speech.quantizer.encode(target)[:, 0]
    centre = speech.quantizer.decode(codes[:, None])

    def terms(prev):
        return speech.loss_terms(cond, target, prev, generator=torch.Generator().manual_seed(3))

    flow, code = terms(torch.zeros_like(target))
    assert torch.allclose(code, torch.nn.functional.cross_entropy(speech.output_head.codes(cond), codes))
    want = speech.flow_head.loss(
        target, cond + speech.output_head.code_embed(codes), prev=centre, generator=torch.Generator().manual_seed(3)
    )
    assert torch.allclose(flow, want, atol=1e-6)
    assert not torch.allclose(
        flow, speech.flow_head.loss(target, cond, prev=centre, generator=torch.Generator().manual_seed(3))
    )
    g = torch.Generator().manual_seed(3)
    assert torch.allclose(speech.loss(cond, target, torch.zeros_like(target), generator=g), flow + code)
    # the previous token plays no part: the prior starts at the target's code's centroid
    assert torch.allclose(terms(torch.randn_like(target))[0], flow, atol=1e-6)


def test_greedy_sample_refines_the_argmax_codes_centroid(corpus):
    model = coarse_fine_model(corpus).eval()
    speech = model.speech
    cond = torch.randn(4, model.width)
    codes = speech.output_head.codes(cond).argmax(-1)
    centre = speech.quantizer.decode(codes[:, None])

    def sample():
        gens = [torch.Generator().manual_seed(i) for i in range(4)]
        prev = torch.randn(4, speech.payload_dim)  # not used
        return speech.sample(cond, prev, gens, temperature=0.0, steps=3, solver="euler", cfg_scale=1.0)

    # An untrained flow head outputs zero velocity: the greedy token is the argmax code's centroid.
    assert torch.allclose(sample(), centre, atol=1e-6)
    with_a_field(model)
    out = sample()
    want = speech.flow_head.sample(
        cond + speech.output_head.code_embed(codes),
        prev=centre,
        steps=3,
        solver="euler",
        temperature=0.0,
        noise=torch.zeros(4, speech.payload_dim),
    )
    assert torch.allclose(out, want, atol=1e-6) and not torch.allclose(out, centre, atol=1e-3)
    with torch.no_grad():  # the code's embedding is part of the condition
        speech.output_head.code_embed.weight.mul_(3.0)
    assert not torch.allclose(sample(), out, atol=1e-4)
    tokens = torch.randn(4, speech.payload_dim)
    assert torch.equal(speech.represent(tokens), tokens)  # refined tokens are continuous: nothing is lost
    speech.refine = False  # the ablation: the coarse stage alone
    assert torch.equal(sample(), centre)
    # ... which can say no more than each token's centroid
    assert torch.equal(speech.represent(tokens), speech.quantizer.decode(speech.quantizer.encode(tokens)))


def test_rows_sharing_a_generator_draw_as_one_after_another(corpus):
    model = with_a_field(coarse_fine_model(corpus)).eval()
    speech = model.speech
    cond, prev = torch.randn(3, model.width), torch.zeros(3, speech.payload_dim)
    kw = dict(temperature=1.0, steps=2, solver="euler", cfg_scale=1.0)
    g = torch.Generator().manual_seed(4)
    batched = speech.sample(cond, prev, [g] * 3, **kw)
    g.manual_seed(4)
    one_by_one = torch.cat([speech.sample(cond[i : i + 1], prev[i : i + 1], [g], **kw) for i in range(3)])
    assert torch.allclose(batched, one_by_one, rtol=1e-4, atol=1e-3)


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

    def mean(key, rows):
        return sum(h[key] for h in rows) / len(rows)

    # Both terms are logged apart and both learn: the code cross-entropy, and the refinement from the centroid.
    assert mean("code", hist[-5:]) < 0.2 * mean("code", hist[:5])
    assert mean("flow", hist[-5:]) < 0.8 * mean("flow", hist[:5])
    assert abs(hist[-1]["loss"] - sum(hist[-1][k] for k in ("text", "state", "flow", "code"))) < 1e-4
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
