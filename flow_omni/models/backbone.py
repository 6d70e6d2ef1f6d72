"""The LLM backbone (any ``transformers`` causal LM), its presets, and the post-net.

A backbone is given either by ``path`` (a local folder of a pretrained causal LM, or its hub id,
optionally with a ``gguf_file`` inside it) or by ``hf_config`` (a ``transformers`` config dict with a
``model_type``), from which a randomly initialised model is built. A hub id is fetched into the
Hugging Face cache once, up front, by :func:`locate_backbone`; loading itself passes
``local_files_only=True``, so it never waits on the network.

Presets are Qwen2-shaped (the Flow-Omni and Mini-Omni backbone family) and sized to train on a CPU:
``tiny`` ≈ 5 M and ``small`` ≈ 30 M parameters for the whole FlowOmni model. Their flow heads use
FELLE's prior centred on the previous token (std 0.5); the README ("Model choices") gives the
measurement behind that choice.

The post-net ("a few transformer blocks" over the LLM hidden states before the flow head, as in
Flow-Omni) is a small causal Llama stack fed with ``inputs_embeds``: reusing ``transformers``' own
blocks gives it a KV cache for free, so incremental generation stays exact.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flow_omni.config import Config
from flow_omni.errors import CheckpointError, ConfigError
from flow_omni.hub_fetch import hub_snapshot, looks_like_repo_id

#: Qwen2 shapes of the presets (vocab size is filled in from the tokenizer).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "backbone": dict(
            model_type="qwen2",
            hidden_size=256,
            intermediate_size=704,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
        ),
        "flow": dict(width=256, depth=3, prior="previous", prior_std=0.5),
        "postnet_layers": 1,
        "encoder": dict(kind="conv", channels=128, conv_layers=2, transformer_layers=1, heads=4),
    },
    "small": {
        "backbone": dict(
            model_type="qwen2",
            hidden_size=512,
            intermediate_size=1152,
            num_hidden_layers=8,
            num_attention_heads=8,
            num_key_value_heads=4,
        ),
        "flow": dict(width=512, depth=3, prior="previous", prior_std=0.5),
        "postnet_layers": 1,
        "encoder": dict(kind="conv", channels=256, conv_layers=2, transformer_layers=2, heads=4),
    },
}


@dataclasses.dataclass
class BackboneConfig(Config):
    """Where the causal LM comes from (``path``) or how to build it (``hf_config``)."""

    path: str | None = None
    gguf_file: str | None = None
    hf_config: dict = dataclasses.field(default_factory=dict)
    attn_implementation: str = "sdpa"

    def __post_init__(self) -> None:
        if self.path is None and not self.hf_config:
            raise ConfigError(
                "BackboneConfig: give either 'path' (a local causal LM) or 'hf_config' (with a model_type)"
            )
        if self.hf_config and "model_type" not in self.hf_config:
            raise ConfigError("BackboneConfig.hf_config needs a 'model_type' key (e.g. 'qwen2', 'llama')")


#: What a hub backbone needs: its config, safetensors weights and tokenizer files. Not ``*.bin``: repos
#: that have both formats would be downloaded twice, and ``transformers`` prefers safetensors.
HUB_BACKBONE_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken")
_EXAMPLE_ID = "HuggingFaceTB/SmolLM2-135M"


def locate_backbone(path: str, gguf_file: str | None = None, *, what: str = "backbone path") -> str:
    """Check that the causal LM at ``path`` can be loaded offline, fetching a hub id into the local
    Hugging Face cache when the hub can be reached; returns ``path`` (``~`` expanded, which
    ``transformers`` does not do).

    ``path`` is a local folder (with ``config.json``, or with ``gguf_file``) or a hub id ``owner/name``.
    Anything else, or a hub id that is neither cached nor downloadable now, raises a one-line
    :class:`ConfigError` or :class:`~flow_omni.errors.HubUnavailableError` naming ``what``.
    """
    local = Path(path).expanduser()
    if local.is_dir():
        needed = gguf_file or "config.json"
        if not (local / needed).is_file():
            raise ConfigError(
                f"{what} {path!r} has no {needed}"
                + (
                    " (expected the folder that holds the GGUF file)"
                    if gguf_file
                    else " (expected a Hugging Face model folder: config.json, weights and tokenizer files; "
                    "for a GGUF file, its folder and gguf_file=NAME.gguf)"
                )
            )
        return str(local)
    if local.exists():
        gguf = f"; for a GGUF file give its folder and gguf_file={local.name}" if local.suffix == ".gguf" else ""
        raise ConfigError(f"{what} {path!r} is a file, not a folder (expected a local model folder or a hub id){gguf}")
    if not looks_like_repo_id(path):
        raise ConfigError(
            f"{what} {path!r} is not a folder (nothing is there; expected a local model folder or a hub id "
            f"such as {_EXAMPLE_ID})"
        )
    hub_snapshot(
        path,
        [gguf_file] if gguf_file else HUB_BACKBONE_FILES,
        required=[gguf_file] if gguf_file else ["config.json", "*.safetensors"],
        what=what,
        hint=f"Download it where the hub can be reached (hf download {path} --local-dir DIR) and pass the folder DIR",
    )
    return path


#: ``attn_implementation`` for PyTorch's scaled dot-product attention computed in float32 even under bf16
#: autocast, the matmuls around it staying bf16. On a CPU, PyTorch's bf16 attention kernels are slower than
#: its float32 ones at the sequence lengths a tiny model trains on (``benchmarks/training_precision.py``
#: measures a training step both ways). Without autocast it is "sdpa".
SDPA_FLOAT32 = "sdpa_float32"


def _sdpa_float32(module, query, key, value, attention_mask, **kwargs):
    """``transformers``' sdpa attention on float32 ``(B, H, L, D)`` query/key/value; output in the query's dtype."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    dtype = query.dtype
    with torch.autocast(query.device.type, enabled=False):
        out, weights = sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )
    return out.to(dtype), weights


def _register_attention(attn: str) -> None:
    """Make ``attn`` known to ``transformers`` when it is one of ours (idempotent)."""
    if attn != SDPA_FLOAT32:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SDPA_FLOAT32, _sdpa_float32)
    AttentionMaskInterface.register(SDPA_FLOAT32, sdpa_mask)


def _config_from_dict(data: dict, attn: str):
    from transformers import AutoConfig

    data = {k: v for k, v in data.items() if k not in ("transformers_version", "architectures", "_name_or_path")}
    try:
        cfg = AutoConfig.for_model(**data)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"BackboneConfig.hf_config is not a valid transformers config: {exc}") from None
    cfg._attn_implementation = attn
    return cfg


def build_backbone(cfg: BackboneConfig, from_checkpoint: bool = False) -> nn.Module:
    """Return a ``transformers`` causal LM in float32.

    ``from_checkpoint=True`` builds from ``hf_config`` even when ``path`` is set: the weights come
    from our own checkpoint, so the pretrained files need not exist on this machine.
    """
    from transformers import AutoModelForCausalLM

    _register_attention(cfg.attn_implementation)
    if cfg.path is not None and not from_checkpoint:
        kwargs: dict[str, Any] = dict(
            local_files_only=True, dtype=torch.float32, attn_implementation=cfg.attn_implementation
        )
        if cfg.gguf_file:
            kwargs["gguf_file"] = cfg.gguf_file
        try:
            # from_pretrained returns eval mode, which Lightning keeps ("Found 397 module(s) in eval mode at
            # the start of training"): the LLM's dropout would be off in training. Follow the parent instead.
            return AutoModelForCausalLM.from_pretrained(cfg.path, **kwargs).train()
        except OSError as exc:
            raise CheckpointError(
                f"could not load a causal LM from {cfg.path!r} offline ({str(exc).splitlines()[0]}); "
                "pass a local directory holding config.json and weights (or gguf_file=...)"
            ) from None
    return AutoModelForCausalLM.from_config(_config_from_dict(cfg.hf_config, cfg.attn_implementation))


def hidden_size(backbone: nn.Module) -> int:
    c = backbone.config
    return int(getattr(c, "hidden_size", None) or getattr(c, "n_embd", None) or c.d_model)


def build_postnet(layers: int, width: int, heads: int | None = None, attn: str = "sdpa") -> nn.Module | None:
    """A causal Llama stack of ``layers`` blocks at ``width`` (``None`` for 0 layers)."""
    if layers == 0:
        return None
    from transformers import LlamaConfig, LlamaModel

    if heads is None:
        heads = max(1, width // 64)
    while width % heads:
        heads -= 1
    cfg = LlamaConfig(
        hidden_size=width,
        intermediate_size=3 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        vocab_size=1,
        max_position_embeddings=1 << 16,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    _register_attention(attn)
    cfg._attn_implementation = attn
    model = LlamaModel(cfg)
    # The token embedding is never used (we feed inputs_embeds); keep it out of the optimiser.
    model.embed_tokens.weight.requires_grad_(False)
    return model
