"""LoRA on the backbone through PEFT: inject, save/load the adapter alone, merge for export.

PEFT's ``inject_adapter_in_model`` puts LoRA layers into the backbone *in place*, so the
backbone keeps its class and FlowOmni keeps calling ``backbone.base_model`` and
``get_input_embeddings`` as before (``get_peft_model`` would wrap it and change both). Adapter
weights are the parameters whose names contain ``lora_``; an adapter directory holds
``config.json`` (the :class:`LoraSettings`) + ``adapter.safetensors`` — megabytes instead of the
whole model. ``merge_lora`` folds ``B @ A * alpha / r`` into the base weights and removes the
LoRA layers, which gives a plain FlowOmni that loads and runs without PEFT.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from flow_omni.checkpoint import load_checkpoint, save_checkpoint
from flow_omni.config import Config
from flow_omni.errors import CheckpointError, ConfigError

ADAPTER_CLASS = "LoraAdapter"
LORA_MARK = "lora_"


@dataclasses.dataclass
class LoraSettings(Config):
    """PEFT ``LoraConfig`` fields we expose (stored with every adapter)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = dataclasses.field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0 or not self.target_modules:
            raise ConfigError(f"LoraSettings: need r >= 1, alpha > 0, dropout in [0, 1), target_modules; got {self}")

    def peft_config(self):
        from peft import LoraConfig  # PEFT is optional (flow_omni[train]): imported only when LoRA is used

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            bias="none",
        )


def has_lora(module: nn.Module) -> bool:
    return any(LORA_MARK in name for name, _ in module.named_parameters())


def apply_lora(model: nn.Module, settings: LoraSettings) -> list[str]:
    """Inject LoRA into ``model.backbone``; freeze the backbone's own weights. Returns adapter names."""
    from peft import inject_adapter_in_model  # optional dependency, as above

    if has_lora(model.backbone):
        raise ConfigError("the backbone already has LoRA layers")
    names = {n.rsplit(".", 1)[-1] for n, m in model.backbone.named_modules() if isinstance(m, nn.Linear)}
    missing = sorted(set(settings.target_modules) - names)
    if missing:
        raise ConfigError(
            f"LoRA target module(s) {missing} are not in this backbone; its linear layers are {sorted(names)}"
        )
    inject_adapter_in_model(settings.peft_config(), model.backbone)
    for name, p in model.backbone.named_parameters():
        p.requires_grad_(LORA_MARK in name)
    model.lora_settings = settings
    return adapter_names(model)


def adapter_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if LORA_MARK in n]


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if LORA_MARK in n}


def save_adapter(model: nn.Module, directory: str | Path) -> Path:
    """Write only the adapter: ``config.json`` (LoraSettings) + ``model.safetensors``."""
    settings = getattr(model, "lora_settings", None)
    if settings is None or not has_lora(model):
        raise ConfigError("this model has no LoRA adapter to save (use apply_lora first)")
    return save_checkpoint(directory, ADAPTER_CLASS, settings.to_dict(), adapter_state_dict(model))


def load_adapter(model: nn.Module, directory: str | Path) -> LoraSettings:
    """Inject the adapter of ``directory`` into ``model`` (which must be the matching base model)."""
    meta, state = load_checkpoint(directory, ADAPTER_CLASS)
    settings = LoraSettings.from_dict(meta["config"])
    apply_lora(model, settings)
    own = dict(model.named_parameters())
    expected = set(adapter_names(model))
    unexpected, missing = sorted(set(state) - expected), sorted(expected - set(state))
    if unexpected or missing:
        raise CheckpointError(
            f"{directory}: the adapter does not fit this model (missing {missing[:3]}…, unexpected {unexpected[:3]}…)"
            if (missing or unexpected)
            else ""
        )
    with torch.no_grad():
        for name, value in state.items():
            if own[name].shape != value.shape:
                raise CheckpointError(
                    f"{directory}: adapter weight {name} has shape {tuple(value.shape)}, "
                    f"the model expects {tuple(own[name].shape)} (different base model or rank?)"
                )
            own[name].copy_(value)
    return settings


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base Linear and remove it (in place); returns ``model``."""
    from peft.tuners.lora import LoraLayer  # optional dependency, as above

    for name, module in list(model.backbone.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.backbone.get_submodule(parent_name) if parent_name else model.backbone
            setattr(parent, child, module.get_base_layer())
    if hasattr(model, "lora_settings"):
        del model.lora_settings
    return model
