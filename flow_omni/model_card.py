"""The model card: ``README.md`` in a saved FlowOmni folder, the model described in words.

A folder that leaves the machine (``push_to_hub``, a copy to a colleague) should say what it holds
without anyone opening ``config.json``: the backbone, the speech tokens and head, the encoder, the
parameter counts, what it was trained on and for how long, and what was measured on it. The card is
made from ``config.json``'s dict (so this module needs nothing from :mod:`flow_omni.models`, which
calls it) and from what training records; nothing in it is a guess, and what is not known is said
to be unknown.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from flow_omni.checkpoint import atomic_write_text

CARD_NAME = "README.md"

#: Hugging Face hub metadata (the YAML block a hub page reads its tags from).
FRONT_MATTER = """---
library_name: flow_omni
tags:
- flow_omni
- speech
- speech-language-model
- text-to-speech
- automatic-speech-recognition
---
"""

#: Readable names of the model's parts, keyed by sub-module path (the training ``trainable`` groups'
#: names), in the order the card lists them.
PARTS = {
    "backbone": "LLM backbone (embeddings, decoder, LM head)",
    "encoder": "speech encoder and adapter",
    "speech.input_layer": "speech input layer",
    "speech.output_head": "speech head",
    "state_embed": "speech-state embedding",
    "state_head": "speech-state head",
    "postnet": "post-net",
    "ctc_blank": "CTC blank logit",
}


@dataclasses.dataclass(frozen=True)
class TrainingRecord:
    """What a training run knows about itself when it saves the model (for the card)."""

    steps: int
    batch_size: int  # items per optimizer step (the global batch times gradient accumulation)
    learning_rate: float
    seed: int
    train_manifests: tuple[str, ...]
    train_entries: int  # manifest lines the run could use
    task_weights: dict
    trainable: tuple[str, ...]
    lora_rank: int | None = None
    init_from: str | None = None  # a fine-tune: the folder it started from
    p_augment: float = 0.0
    #: wall time of the training loop, when one uninterrupted run measured all of it (None after a resume)
    seconds: float | None = None


#: What the metric names of the evaluation rows mean (lines are listed for the names a card shows).
METRICS = {
    "cer": "character error rate of the model's own greedy ASR, after text normalisation (lower is better)",
    "wer": "word error rate of the same transcripts (lower is better)",
    "mel_l1": "greedy TTS: mean absolute log-mel difference to the reference recording (lower is better)",
    "accuracy": "spoken QA: share of answers whose text is right (higher is better)",
}


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {s} s" if minutes else f"{seconds:.1f} s"


def _backbone(config: dict) -> str:
    bb, hf = config["backbone"], config["backbone"].get("hf_config", {})
    shape = (
        f"{hf.get('model_type', '?')}, {hf.get('num_hidden_layers', '?')} layers, width {hf.get('hidden_size', '?')}, "
        f"{hf.get('num_attention_heads', '?')} attention heads, vocabulary {hf.get('vocab_size', '?')}"
    )
    if bb.get("path"):
        source = f"`{bb['path']}`" + (f" (`{bb['gguf_file']}`)" if bb.get("gguf_file") else "")
        return f"the pretrained causal LM {source} ({shape})"
    return f"a causal LM built from its config, not pretrained ({shape})"


def _text_tokenizer(config: dict) -> str:
    spec = config["text_tokenizer"]
    if spec.get("kind") == "char":
        return f"characters ({len(spec.get('chars', ''))} known, others read as `<unk>`)"
    if spec.get("kind") == "hf":
        return f"the tokenizer of `{spec.get('path')}` (saved in `tokenizer/`)"
    return str(spec.get("kind"))


def _speech_tokens(config: dict) -> str:
    speech = config["speech"]
    mel, r = speech["mel"], speech["r"]
    rate = mel["sample_rate"] / mel["hop_length"] / r
    return (
        f"{r} consecutive log-mel frames of the Vocos front end ({mel['sample_rate']} Hz, hop {mel['hop_length']}, "
        f"{mel['n_mels']} bins) per token, {rate:.1f} tokens per second of audio"
    )


def _speech_head(config: dict) -> str:
    kind = config["tokens"]
    if kind == "continuous":
        flow = config["flow"]
        prior = "the previous token" if flow.get("prior") == "previous" else "a standard Gaussian"
        return (
            f"continuous tokens; a flow-matching MLP (width {flow['width']}, {flow['depth']} residual blocks) "
            f"samples each next token from noise centred on {prior} (std {flow.get('prior_std', 1.0):g})"
        )
    q = config.get("quantizer") or {}
    levels = int(q.get("num_levels", 1))
    if kind == "coarse_fine":
        flow = config["flow"]
        start = "centred on the code's centroid" if flow.get("prior") == "previous" else "of zero mean"
        return (
            f"continuous tokens, coarse to fine: a softmax picks one of K = {q.get('codebook_size')} k-means codes, "
            f"then a flow-matching MLP (width {flow['width']}, {flow['depth']} residual blocks) conditioned on it "
            f"samples the token from noise {start} (std {flow.get('prior_std', 1.0):g})"
        )
    if kind == "kmeans":
        return f"discrete k-means codes of the same tokens (K = {q.get('codebook_size')}), a softmax head"
    delay = ", Mini-Omni per-level delay" if config.get("level_delay", True) and levels > 1 else ""
    return (
        f"discrete residual-VQ codes of the same tokens (K = {q.get('codebook_size')}, {levels} levels{delay}), "
        "a softmax head per level"
    )


def _encoder(config: dict) -> str:
    enc = config["encoder"]
    if enc["kind"] == "conv":
        return (
            f"convolutional, trained from scratch ({enc['conv_layers']} conv layers of {enc['channels']} channels, "
            f"{enc['transformer_layers']} transformer layer(s))"
        )
    source = f"`{enc['whisper_path']}`" if enc.get("whisper_path") else "random initialisation"
    words = [f"Whisper encoder from {source}", "frozen" if enc.get("frozen") else "trained"]
    if enc.get("whisper_window_seconds"):
        words.append(f"{enc['whisper_window_seconds']:g} s window")
    words.append(f"{enc['downsample']} frames (50 Hz) stacked per LLM position")
    return ", ".join(words)


def _layout(config: dict) -> str:
    lay = config["layout"]
    if lay["kind"] == "parallel":
        return f"parallel text and speech streams, text {lay['text_delay']} positions ahead of speech"
    if lay["kind"] == "aligned":
        return (
            "parallel text and speech streams, each word's text placed where it is spoken, "
            f"{lay['text_delay']} positions ahead of its speech"
        )
    return f"interleaved chunks of {lay['text_chunk']} text tokens and {lay['speech_chunk']} speech positions"


def _model_section(config: dict, parameters: dict[str, int]) -> list[str]:
    w = config["loss_weights"]
    loss = f"text {w['text']:g}, state {w['state']:g}, speech {w['flow']:g}" + (
        f", CTC {w['ctc']:g}" if w.get("ctc") else ""
    )
    lines = [
        "## Model",
        "",
        f"- **Backbone:** {_backbone(config)}.",
        f"- **Text tokens:** {_text_tokenizer(config)}.",
        f"- **Speech tokens:** {_speech_tokens(config)}.",
        f"- **Speech head:** {_speech_head(config)}.",
        f"- **Speech encoder:** {_encoder(config)}.",
        f"- **Layout:** {_layout(config)}; post-net of {config['postnet_layers']} layer(s).",
        f"- **Loss weights:** {loss}.",
        "- **Vocoder:** none in this folder. The speech is log-mel; any Vocos trained on that mel decodes it "
        "(`flow-omni train-vocoder`), and Griffin-Lim is the weight-free fallback.",
        "",
        "| part | parameters |",
        "|---|---|",
    ]
    named = [k for k in PARTS if k in parameters] + sorted(set(parameters) - set(PARTS) - {"total"})
    lines += [f"| {PARTS.get(k, k)} | {parameters[k]:,} |" for k in named]
    if "total" in parameters:
        lines.append(f"| **total** | **{parameters['total']:,}** ({parameters['total'] / 1e6:.2f} M) |")
    return lines + [""]


def _training_section(training: TrainingRecord | None) -> list[str]:
    if training is None:
        return ["## Training", "", "Not recorded: this folder was saved without a training record.", ""]
    t = training
    start = f"fine-tuned from `{t.init_from}`" if t.init_from else "trained from the weights its config builds"
    what = ", ".join(t.trainable) + (f", and LoRA of rank {t.lora_rank} on the backbone" if t.lora_rank else "")
    tasks = ", ".join(f"{k} {v:g}" for k, v in t.task_weights.items() if v)
    lines = [
        "## Training",
        "",
        f"- **Budget:** {t.steps} steps of {t.batch_size} items, learning rate {t.learning_rate:g}, seed {t.seed}; "
        f"{start}.",
        f"- **Trained:** {what}.",
        f"- **Data:** {t.train_entries} entries from " + ", ".join(f"`{m}`" for m in t.train_manifests) + ".",
        f"- **Tasks drawn (weights):** {tasks}.",
    ]
    if t.p_augment:
        lines.append(f"- **Augmentation:** a share of {t.p_augment:g} of the input utterances perturbed.")
    wall = (
        _duration(t.seconds)
        if t.seconds is not None
        else "not known (the run was resumed from a checkpoint that did not keep the time before it)"
    )
    return lines + [f"- **Wall time of training:** {wall}.", ""]


def _number(value: float) -> str:
    return f"{value:.3f}" if value == value else "n/a"  # NaN: nothing was measured


def _metrics_section(metrics: Sequence[dict] | None) -> list[str]:
    if not metrics:
        return ["## Evaluation", "", "Not measured when this card was written.", ""]
    has_before = any("before" in m for m in metrics)
    head = "| data | task | condition | metric | value |" + (" before training |" if has_before else "") + " items |"
    lines = [
        "## Evaluation",
        "",
        "Measured on held-out data at the end of training:",
        "",
        *(f"- `{k}`: {v}" for k, v in METRICS.items() if any(m["metric"] == k for m in metrics)),
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for m in metrics:
        before = f" {_number(m['before'])} |" if has_before and "before" in m else (" |" if has_before else "")
        lines.append(
            f"| {m.get('data', '')} | {m['task']} | {m['condition']} | {m['metric']} | {_number(m['value'])} |"
            f"{before} {m.get('n', '')} |"
        )
    return lines + [""]


def render_model_card(
    config: dict,
    parameters: dict[str, int],
    training: TrainingRecord | None = None,
    metrics: Sequence[dict] | None = None,
) -> str:
    """The card's Markdown for a FlowOmni config (``config.json``'s ``config`` dict).

    ``parameters`` maps sub-module paths to their counts, plus ``total``; ``metrics`` are long-format rows
    ``{task, condition, metric, value, n}`` with optional ``data`` (the test set) and ``before``.
    """
    kind = {
        "continuous": "continuous speech tokens (flow-matching head)",
        "coarse_fine": "continuous speech tokens (k-means code, then flow-matching head)",
    }.get(config["tokens"], "discrete speech codes")
    lines = [
        FRONT_MATTER,
        f"# FlowOmni speech LLM, {kind}",
        "",
        "A speech language model saved by flow_omni: it reads text and speech and writes text and speech "
        "(ASR, TTS, spoken dialogue). Load it with:",
        "",
        "```python",
        "from flow_omni import FlowOmni",
        'model = FlowOmni.from_pretrained("path/to/this/folder")',
        "```",
        "",
        "or use it from the shell: `flow-omni transcribe audio.wav --model DIR`, "
        '`flow-omni speak "hello" -o hello.wav --model DIR`.',
        "",
    ]
    lines += _model_section(config, parameters)
    lines += _training_section(training)
    lines += _metrics_section(metrics)
    return "\n".join(lines)


def write_model_card(
    directory: str | Path,
    config: dict,
    parameters: dict[str, int],
    training: TrainingRecord | None = None,
    metrics: Sequence[dict] | None = None,
) -> Path:
    """Write (atomically) ``directory/README.md`` from :func:`render_model_card`; returns its path."""
    path = Path(directory) / CARD_NAME
    atomic_write_text(path, render_model_card(config, parameters, training, metrics))
    return path


__all__ = ["CARD_NAME", "TrainingRecord", "render_model_card", "write_model_card"]
