"""The one speech-head interface: both kinds of speech token honour the same contract, the model
treats its config as a value, and checkpoints from before the interface still load."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from flow_omni import FlowOmni, FlowOmniConfig
from flow_omni.errors import FlowOmniError
from flow_omni.layout import STATE_GEN, STATE_PAD, STATE_START, STATE_STOP
from flow_omni.models.continuous_speech import ContinuousSpeech
from flow_omni.models.speech_codes import CodeSpeech
from flow_omni.models.speech_head import SpeechHead


def model_of(kind: str, tone) -> FlowOmni:
    torch.manual_seed(0)
    if kind == "continuous":
        model = FlowOmni(FlowOmniConfig.preset("tiny"))
    else:
        levels = {"kmeans": 1, "rvq": 2}[kind]
        q = {"codebook_size": 8, "iterations": 3, **({"num_levels": levels} if levels > 1 else {})}
        model = FlowOmni(FlowOmniConfig.preset("tiny", tokens=kind, quantizer=q))
    model.fit_speech_stats([tone])
    if model.speech.needs_fit:
        model.fit_speech_head([model.encode_speech(tone)])
    return model


@pytest.mark.parametrize("kind", ["continuous", "kmeans", "rvq"])
def test_every_head_honours_the_contract(kind, tone):
    model = model_of(kind, tone)
    head = model.speech
    assert isinstance(head, SpeechHead)
    assert isinstance(head, ContinuousSpeech if kind == "continuous" else CodeSpeech)
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
    expected = tokens if kind == "continuous" else head.quantizer(tokens)
    assert torch.allclose(head.to_tokens(run), expected, atol=1e-5)
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
