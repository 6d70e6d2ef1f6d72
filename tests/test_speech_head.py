"""The one speech-head interface: every kind of speech token honours the same contract, the model
treats its config as a value, and checkpoints from before the interface still load."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from flow_omni import FlowOmni, FlowOmniConfig, Sample
from flow_omni.errors import FlowOmniError
from flow_omni.layout import STATE_GEN, STATE_PAD, STATE_START, STATE_STOP
from flow_omni.models.coarse_fine_speech import CoarseFineSpeech
from flow_omni.models.continuous_speech import ContinuousSpeech
from flow_omni.models.flow_head import FlowHead, FlowHeadConfig
from flow_omni.models.speech_codes import CodeSpeech
from flow_omni.models.speech_head import SpeechHead
from flow_omni.training.quicktrain import quick_train


def model_of(kind: str, tone) -> FlowOmni:
    torch.manual_seed(0)
    if kind == "continuous":
        model = FlowOmni(FlowOmniConfig.preset("tiny"))
    elif kind == "coarse_fine":
        model = FlowOmni(FlowOmniConfig.preset("tiny", tokens=kind, quantizer={"codebook_size": 8, "iterations": 3}))
    else:
        levels = {"kmeans": 1, "rvq": 2}[kind]
        q = {"codebook_size": 8, "iterations": 3, **({"num_levels": levels} if levels > 1 else {})}
        model = FlowOmni(FlowOmniConfig.preset("tiny", tokens=kind, quantizer=q))
    model.fit_speech_stats([tone])
    if model.speech.needs_fit:
        model.fit_speech_head([model.encode_speech(tone)])
    return model


@pytest.mark.parametrize("kind", ["continuous", "kmeans", "rvq", "coarse_fine"])
def test_every_head_honours_the_contract(kind, tone):
    model = model_of(kind, tone)
    head = model.speech
    assert isinstance(head, SpeechHead)
    assert type(head) is {"continuous": ContinuousSpeech, "coarse_fine": CoarseFineSpeech}.get(kind, CodeSpeech)
    tokens = model.encode_speech(tone)[:5]  # (n, D)
    n, P, W = tokens.shape[0], head.payload_dim, model.width
    L = n + head.tail + 3
    speech = torch.zeros(1, L, tokens.shape[1])
    speech[0, 1 : 1 + n] = tokens
    state = torch.tensor([[STATE_START] + [STATE_GEN] * (n + head.tail) + [STATE_STOP, STATE_PAD]])
    pay = head.payloads(speech, state)
    assert pay.shape == (1, L, P)
    assert head.embed(pay).shape == (1, L, W)
    run = pay[0, 1 : 1 + n + head.tail].float()
    # The run's payloads give back its tokens: exactly for continuous ones, as quantised for codes.
    expected = head.quantizer(tokens) if isinstance(head, CodeSpeech) else tokens
    assert torch.allclose(head.to_tokens(run), expected, atol=1e-5)
    # The best the head can speak (a perfect predictor's tokens) is that round trip too.
    assert torch.allclose(head.represent(tokens), expected, atol=1e-5)
    assert torch.equal(head.represent(tokens), tokens) == (not isinstance(head, CodeSpeech))
    cond = torch.randn(n, W)
    loss = head.loss(cond, run[:n], run[:n], generator=torch.Generator().manual_seed(0))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None for p in head.output_head.parameters())
    gens = [torch.Generator().manual_seed(i) for i in range(n)]
    nxt = head.sample(cond, run[:n], gens, temperature=1.0, steps=2, solver="euler", cfg_scale=1.0)
    assert nxt.shape == (n, P) and nxt.dtype == torch.float32
    again = head.sample(
        cond,
        run[:n],
        [torch.Generator().manual_seed(i) for i in range(n)],
        temperature=1.0,
        steps=2,
        solver="euler",
        cfg_scale=1.0,
    )
    assert torch.equal(nxt, again)  # each row's draws come from its own generator


def test_model_keeps_the_callers_config_unchanged(tone):
    cfg = FlowOmniConfig.preset("tiny", tokens="kmeans", quantizer={"codebook_size": 8, "iterations": 3})
    before = cfg.to_dict()
    model = FlowOmni(cfg)
    model.fit_speech_stats([tone])
    model.fit_speech_head([model.encode_speech(tone)])
    assert cfg.to_dict() == before
    assert model.config is not cfg
    assert model.config.speech != cfg.speech and model.config.backbone.hf_config != cfg.backbone.hf_config


def test_continuous_model_has_nothing_to_fit(tone):
    model = model_of("continuous", tone)
    with pytest.raises(FlowOmniError, match="nothing to fit"):
        model.fit_speech_head([model.encode_speech(tone)])


@pytest.mark.parametrize("kind", ["continuous", "rvq"])
def test_checkpoint_with_the_old_speech_names_loads(kind, tone, tmp_path):
    model = model_of(kind, tone)
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    old = {}
    for key, value in state.items():
        for new, was in (
            ("speech.input_layer.tables.", "codes.embeds."),
            ("speech.quantizer.", "codes.quantizer."),
            ("speech.input_layer.", "speech_in." if kind == "continuous" else "codes.embeds."),
            ("speech.output_head.", "flow_head." if kind == "continuous" else "codes.head."),
        ):
            if key.startswith(new):
                key = was + key[len(new) :]
                break
        old[key] = value
    assert not any(k.startswith("speech.") for k in old)
    save_file(old, tmp_path / "model.safetensors")
    again = FlowOmni.from_pretrained(tmp_path)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_input_norm_puts_speech_on_the_text_embeddings_scale(tone):
    """Without the norm a projected mel token is many times a text embedding's size; with it, the two
    start on one scale (the fix for the text stream drowning at speech positions)."""
    ratios = {}
    for norm in (False, True):
        torch.manual_seed(0)
        model = FlowOmni(FlowOmniConfig.preset("tiny", speech_input_norm=norm))
        model.fit_speech_stats([tone])
        tokens = model.encode_speech(tone)
        speech = model.speech.embed(tokens).norm(dim=-1).mean()
        text = model.backbone.get_input_embeddings().weight.norm(dim=-1).mean()
        ratios[norm] = float(speech / text)
    assert ratios[False] > 3 * ratios[True]
    assert 0.5 < ratios[True] < 2.0, ratios


def _own_previous_head(own_previous: float, rounds: int = 1) -> ContinuousSpeech:
    torch.manual_seed(0)
    flow = FlowHeadConfig(
        token_dim=6,
        cond_dim=8,
        width=16,
        depth=1,
        prior="previous",
        prior_std=0.5,
        own_previous=own_previous,
        own_previous_rounds=rounds,
        own_previous_steps=2,
    )
    head = ContinuousSpeech(flow, width=8)
    for p in head.output_head.parameters():  # a fresh head's sample is its prior's centre: give it a field
        nn.init.normal_(p, std=0.3)
    return head.train()


def _speech_batch():
    g = torch.Generator().manual_seed(1)
    payloads, cond = torch.randn(2, 7, 6, generator=g), torch.randn(2, 7, 8, generator=g)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0, 1:5] = True  # positions whose next payload is a target
    mask[1, 2:6] = True
    return payloads, cond, mask


def test_own_previous_gives_the_head_its_own_chained_samples():
    """Scheduled sampling of the prior: with own_previous=1 every payload that the head predicts
    becomes its greedy sample from the position before, round 2 starting from round 1's samples."""
    head = _own_previous_head(1.0, rounds=2)
    payloads, cond, mask = _speech_batch()
    out = head.training_previous(cond, payloads, mask, None, torch.Generator().manual_seed(0))

    def sample(z, prev):
        return head.output_head.sample(
            z[None], prev=prev[None], steps=2, solver="euler", temperature=0.0, noise=torch.zeros(1, 6)
        )[0]

    for b in range(2):
        own = payloads[b]
        for _ in range(2):
            new = own.clone()
            for t in range(1, 7):
                if mask[b, t - 1]:
                    new[t] = sample(cond[b, t - 1], own[t - 1])
            own = new
        torch.testing.assert_close(out[b], own, atol=1e-5, rtol=1e-4)
    changed = (out != payloads).any(-1)
    assert torch.equal(changed[:, 1:], mask[:, :-1]) and not changed[:, 0].any()
    assert head.training  # sampling left the training mode as it was


def test_own_previous_fraction_is_per_sample_and_off_outside_training():
    payloads, cond, mask = _speech_batch()
    head = _own_previous_head(0.5)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (3, 4)]  # noqa: E731
    out = head.training_previous(cond, payloads, mask, gens(), None)
    changed = (out != payloads).any(-1)
    eligible = int(mask.sum())
    assert 0 < int(changed.sum()) < eligible and not (changed[:, 1:] & ~mask[:, :-1]).any()
    # the rows chosen depend on each sample's generator alone
    again = head.training_previous(cond[[1, 0]], payloads[[1, 0]], mask[[1, 0]], gens()[::-1], None)
    torch.testing.assert_close(again[[1, 0]], out)
    # ... and not on how long the batch was padded: the same draws, and the generator left in the
    # same state for the loss's draws that follow
    pad = lambda x: torch.cat([x, torch.zeros(x.shape[0], 3, *x.shape[2:], dtype=x.dtype)], 1)  # noqa: E731
    alone, padded = gens(), gens()
    first = head.training_previous(cond[:1], payloads[:1], mask[:1], alone[:1], None)
    longer = head.training_previous(pad(cond[:1]), pad(payloads[:1]), pad(mask[:1]), padded[:1], None)
    torch.testing.assert_close(longer[:, :7], first)
    assert torch.equal(torch.rand(4, generator=alone[0]), torch.rand(4, generator=padded[0]))
    assert head.eval().training_previous(cond, payloads, mask, gens(), None) is payloads
    assert _own_previous_head(0.0).training_previous(cond, payloads, mask, gens(), None) is payloads


def test_forward_gives_the_flow_loss_the_heads_previous_tokens(tone, monkeypatch):
    """FlowOmni.forward asks the speech head for the previous tokens of the flow loss: the row that
    predicts payload t+1 gets payload t (the head's choice of it), and replacing them changes the loss
    of an otherwise identical step."""
    base = FlowOmniConfig.preset("tiny")
    losses, own, head_loss = [], ContinuousSpeech.training_previous, FlowHead.loss
    for fraction, shift in ((0.0, 0.0), (0.5, 5.0)):
        torch.manual_seed(0)
        model = FlowOmni(dataclasses.replace(base, flow=dataclasses.replace(base.flow, own_previous=fraction)))
        model.fit_speech_stats([tone])
        seen = {}

        def spy(self, cond, payloads, speech_mask, item_gens, generator, shift=shift, seen=seen):
            out = own(self, cond, payloads, speech_mask, item_gens, generator) + shift
            seen.update(payloads=payloads, mask=speech_mask, previous=out)
            return out

        def loss_spy(self, target, z, prev=None, *args, seen=seen, **kw):
            seen.update(target=target, prev=prev)
            return head_loss(self, target, z, prev, *args, **kw)

        monkeypatch.setattr(ContinuousSpeech, "training_previous", spy)
        monkeypatch.setattr(FlowHead, "loss", loss_spy)
        sample = Sample("T2A", prompt_text="hi", target_text="hi", target_speech=model.encode_speech(tone))
        losses.append(quick_train(model, [sample], steps=1, batch_size=1, seed=0)[0]["flow"])
        payloads, mask = seen["payloads"], seen["mask"]
        assert torch.equal(seen["prev"], seen["previous"][mask].to(seen["prev"]))
        assert torch.equal(seen["target"], payloads[:, 1:][mask[:, :-1]].to(seen["target"]))
        if fraction == 0:
            assert torch.equal(seen["prev"], payloads[mask].to(seen["prev"]))
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)


def test_input_noise_depends_on_the_sample_alone():
    """``speech_input_noise`` corrupts the real positions the LLM reads, in training only, with draws
    that do not depend on the batch's padding (so the loss's later draws do not either)."""
    head = ContinuousSpeech(FlowHeadConfig(token_dim=6, cond_dim=8, width=16), width=8, input_noise=0.5).train()
    payloads = torch.randn(1, 7, 6, generator=torch.Generator().manual_seed(1))
    padded = torch.cat([payloads, torch.zeros(1, 3, 6)], 1)
    gens = lambda: [torch.Generator().manual_seed(3)]  # noqa: E731
    alone, longer = gens(), gens()
    out = head.perturb(payloads, torch.tensor([7]), alone, None)
    out_padded = head.perturb(padded, torch.tensor([7]), longer, None)
    torch.testing.assert_close(out_padded[:, :7], out)
    assert torch.equal(out_padded[:, 7:], padded[:, 7:])  # padding is left alone
    assert (out - payloads).abs().mean() > 0.1
    assert torch.equal(torch.rand(4, generator=alone[0]), torch.rand(4, generator=longer[0]))
    assert head.eval().perturb(payloads, torch.tensor([7]), gens(), None) is payloads
