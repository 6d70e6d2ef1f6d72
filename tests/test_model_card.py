"""The model card: save_pretrained writes README.md, and it says what the config, training and evaluation hold."""

from __future__ import annotations

import dataclasses
import re

import pytest

from flow_omni import FlowOmni, FlowOmniConfig
from flow_omni.eval.heldout import heldout_rows
from flow_omni.model_card import TrainingRecord, render_model_card

RECORD = TrainingRecord(
    steps=500,
    batch_size=16,
    learning_rate=2e-3,
    seed=3,
    train_manifests=("data/learn/train.jsonl", "my/extra.jsonl"),
    train_entries=1955,
    task_weights={"A2T": 1.0, "T2A": 0.5, "T2T": 0.0},
    trainable=("adapters", "heads"),
    lora_rank=8,
    init_from="runs/stage1/model",
    p_augment=0.8,
    seconds=561.0,
)


def parameter_table(card: str) -> dict[str, int]:
    """``| part | 1,234 |`` rows of the card → {part: count} (the total row's name keeps its bold)."""
    return {m[1]: int(m[2].replace(",", "")) for m in re.finditer(r"^\| (.+?) \| \**([\d,]+)\**.*\|$", card, re.M)}


def test_save_pretrained_writes_a_card_that_describes_the_model(tmp_path):
    model = FlowOmni(FlowOmniConfig.preset("tiny", r=4))
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (tmp_path / "m" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: flow_omni\n")  # the hub reads its metadata from this block
    assert "not pretrained (qwen2, 4 layers, width 256, 4 attention heads" in card
    assert "4 consecutive log-mel frames" in card and "23.4 tokens per second" in card
    assert "flow-matching MLP (width 256, 3 residual blocks)" in card and "previous token (std 0.5)" in card
    assert "convolutional, trained from scratch (2 conv layers of 128 channels" in card
    assert "text 2 positions ahead of speech" in card
    table = parameter_table(card)
    assert table.pop("**total**") == model.num_parameters()
    assert sum(table.values()) == model.num_parameters()  # the parts cover the model, each counted once
    assert table["speech head"] == sum(p.numel() for p in model.speech.output_head.parameters())
    assert "Not recorded: this folder was saved without a training record." in card
    assert "Not measured when this card was written." in card
    FlowOmni.from_pretrained(tmp_path / "m")  # the card does not disturb loading


def test_card_names_discrete_heads_whisper_and_a_pretrained_backbone():
    cfg = FlowOmniConfig.preset(
        "tiny",
        r=8,
        tokens="rvq",
        quantizer={"codebook_size": 16, "num_levels": 4},
        encoder={"kind": "whisper", "whisper_path": "builtin:tiny.en", "frozen": True, "downsample": 2},
    ).to_dict()
    cfg["encoder"]["whisper_window_seconds"] = 10.0
    cfg["backbone"]["path"] = "HuggingFaceTB/SmolLM2-135M"
    cfg["text_tokenizer"] = {"kind": "hf", "path": "HuggingFaceTB/SmolLM2-135M"}
    card = render_model_card(cfg, {"total": 10})
    assert "# FlowOmni speech LLM, discrete speech codes" in card
    assert "residual-VQ codes of the same tokens (K = 16, 4 levels, Mini-Omni per-level delay)" in card
    assert "11.7 tokens per second" in card  # r = 8: 24000 / 256 / 8
    assert "Whisper encoder from `builtin:tiny.en`, frozen, 10 s window, 2 frames (50 Hz) stacked" in card
    assert "the pretrained causal LM `HuggingFaceTB/SmolLM2-135M` (qwen2" in card
    assert "the tokenizer of `HuggingFaceTB/SmolLM2-135M`" in card
    kmeans = FlowOmniConfig.preset("tiny", tokens="kmeans", quantizer={"codebook_size": 256}).to_dict()
    assert "k-means codes of the same tokens (K = 256)" in render_model_card(kmeans, {"total": 10})


def test_card_states_training_and_measured_numbers():
    cfg = FlowOmniConfig.preset("tiny").to_dict()
    after = {"test": {"n": 8, "tts_mel_l1": 1.9, "asr": {"clean": {"cer": 0.128, "wer": 0.3, "n": 8}}}}
    before = {"test": {"n": 8, "tts_mel_l1": 2.5, "asr": {"clean": {"cer": 0.5, "wer": 0.9, "n": 8}}}}
    card = render_model_card(cfg, {"total": 10}, RECORD, heldout_rows(after, before))
    assert "500 steps of 16 items, learning rate 0.002, seed 3; fine-tuned from `runs/stage1/model`" in card
    assert "adapters, heads, and LoRA of rank 8 on the backbone" in card
    assert "1955 entries from `data/learn/train.jsonl`, `my/extra.jsonl`" in card
    assert "**Tasks drawn (weights):** A2T 1, T2A 0.5." in card  # a task of weight 0 is not drawn
    assert "a share of 0.8 of the input utterances perturbed" in card
    assert "**Wall time of training:** 9 min 21 s." in card
    assert "| test | asr | clean | cer | 0.128 | 0.500 | 8 |" in card
    assert "| test | tts | clean | mel_l1 | 1.900 | 2.500 | 8 |" in card
    assert "`mel_l1`: greedy TTS" in card and "`accuracy`" not in card  # only the metrics shown are explained
    resumed = render_model_card(cfg, {"total": 10}, dataclasses.replace(RECORD, seconds=None))
    assert "not known (the run was resumed" in resumed


@pytest.mark.parametrize("seconds, words", [(12.34, "12.3 s"), (75, "1 min 15 s"), (7260, "2 h 1 min")])
def test_wall_time_in_words(seconds, words):
    card = render_model_card(FlowOmniConfig.preset("tiny").to_dict(), {}, dataclasses.replace(RECORD, seconds=seconds))
    assert f"**Wall time of training:** {words}." in card
