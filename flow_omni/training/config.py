"""The training configuration: one YAML file = one run (see ``flow_omni/training/recipes/``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from flow_omni.audio.augment import AugmentConfig
from flow_omni.config import Config
from flow_omni.data.dataset import DataConfig
from flow_omni.errors import ConfigError
from flow_omni.models.lora import LoraSettings
from flow_omni.precision import resolve_precision

#: Names accepted in ``trainable`` and the FlowOmni sub-modules (dotted paths) they stand for.
#: ``speech.input_layer`` reads speech payloads into the LLM and ``speech.output_head`` predicts
#: them (the flow head, a discrete model's code softmax, or coarse_fine's code softmax, code embedding
#: and flow head), whatever the kind of speech token.
GROUPS = {
    "backbone": ["backbone"],
    "encoder": ["encoder", "ctc_blank"],  # the CTC term's blank logit reads the encoder output
    "speech_in": ["speech.input_layer"],
    "state_embed": ["state_embed"],
    "state_head": ["state_head"],
    "postnet": ["postnet"],
    "speech_head": ["speech.output_head"],
    # The text-embedding and LM-head rows of the special tokens the library adds to the text tokenizer
    # (<eot>, <tpad>, the task tokens), and only those rows: a frozen pretrained LLM cannot otherwise learn
    # to predict them (train.train_special_token_rows). No module of its own, hence no path.
    "special_tokens": [],
    # aliases
    "flow_head": ["speech.output_head"],  # the continuous model's name for its speech head (all of it)
    "codes": ["speech.input_layer", "speech.output_head"],  # discrete models: code embeddings + heads
    "adapters": ["encoder", "ctc_blank", "speech.input_layer", "state_embed"],
    "heads": ["state_head", "postnet", "speech.output_head"],
    "all": [
        "backbone",
        "encoder",
        "ctc_blank",
        "speech.input_layer",
        "state_embed",
        "state_head",
        "postnet",
        "speech.output_head",
    ],
}


@dataclasses.dataclass
class ModelSpec(Config):
    """Which model to train: a fresh preset, a local pretrained backbone, or a saved FlowOmni."""

    preset: str | None = "tiny"
    r: int = 4
    backbone_path: str | None = None  # a local Hugging Face causal LM (folder)
    gguf_file: str | None = None
    init_from: str | None = None  # a ``save_pretrained`` folder to continue from (fine-tuning)
    #: FlowOmniConfig fields deep-merged into the preset's or backbone's config, e.g. {layout: {text_delay: 3}}
    overrides: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.preset, self.backbone_path, self.init_from)) == 0:
            raise ConfigError("model: give one of preset, backbone_path or init_from")
        if self.init_from is not None and self.overrides:
            raise ConfigError("model.overrides cannot change a model loaded with init_from (its config is fixed)")


@dataclasses.dataclass
class OptimConfig(Config):
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at max_steps
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1 or self.grad_clip < 0:
            raise ConfigError(
                f"optim: need lr > 0, warmup_steps >= 0, 0 <= min_lr_ratio <= 1, grad_clip >= 0; got {self}"
            )


@dataclasses.dataclass
class EvalSpec(Config):
    """Held-out evaluation run before and after training (the noisy-domain fine-tune report)."""

    manifests: dict = dataclasses.field(default_factory=dict)  # name -> manifest path
    conditions: list[str] = dataclasses.field(default_factory=lambda: ["clean", "white@10", "babble@5"])
    max_items: int = 16
    tts: bool = True  # also measure TTS mel distance (clean only: TTS input is text)
    seed: int = 0
    #: items per manifest kept for report.html, before and after: the input as heard under each condition
    #: with its transcript, and the TTS speech (0 = none)
    sample_wavs: int = 2


@dataclasses.dataclass
class TrainConfig(Config):
    """Everything about a run. ``flow-omni train --config run.yaml``."""

    out_dir: str = "runs/run"
    seed: int = 0
    model: ModelSpec = dataclasses.field(default_factory=ModelSpec)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    trainable: list[str] = dataclasses.field(default_factory=lambda: ["all"])
    lora: LoraSettings | None = None
    max_steps: int = 1000
    val_every_steps: int = 200
    checkpoint_every_steps: int = 100
    log_every_steps: int = 10
    #: fit the speech-token normalisation on up to this many training files (fresh models only)
    stats_max_files: int = 200
    #: fit a discrete speech head's codebooks on up to this many spoken training files (fresh models only):
    #: more than the statistics need, since 1,024 codes need more tokens than 100 bins' means and spreads
    codebook_max_files: int = 1000
    accelerator: str = "auto"
    devices: int | str = "auto"  # "auto", a count (2), or device ids ("0,1")
    num_nodes: int = 1
    strategy: str = "auto"  # auto (DDP when >1 process) | ddp | fsdp
    #: a Lightning precision ("32-true", "bf16-mixed", ...) or "auto": bf16-mixed where this machine
    #: multiplies bf16 matrices natively, else 32-true (flow_omni.precision)
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    threads: int | None = None  # torch.set_num_threads per process (CPU)
    loggers: list[str] = dataclasses.field(default_factory=lambda: ["csv", "tensorboard"])
    progress: bool = True
    eval: EvalSpec | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.trainable) - set(GROUPS))
        if unknown:
            raise ConfigError(f"trainable: unknown group(s) {unknown}; valid: {sorted(GROUPS)}")
        if self.lora is not None and "backbone" in self.trainable_modules():
            raise ConfigError(
                "trainable includes the backbone and lora is set: with LoRA the backbone's own weights "
                "stay frozen; list the other groups (e.g. [adapters, heads]) instead of 'all'/'backbone'"
            )
        if not self.trainable and self.lora is None:
            raise ConfigError("nothing to train: trainable is empty and lora is not set")
        if (
            self.max_steps < 1
            or self.checkpoint_every_steps < 1
            or self.log_every_steps < 1
            or self.val_every_steps < 1
        ):
            raise ConfigError("max_steps, checkpoint_every_steps, log_every_steps and val_every_steps must be >= 1")
        for name in ("stats_max_files", "codebook_max_files"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 (training files to fit on), got {getattr(self, name)}")
        if self.strategy not in ("auto", "ddp", "fsdp"):
            raise ConfigError(f"strategy must be auto, ddp or fsdp, got {self.strategy!r}")
        bad = sorted(set(self.loggers) - {"csv", "tensorboard"})
        if bad:
            raise ConfigError(f"loggers: unknown {bad}; valid: ['csv', 'tensorboard']")

    def with_precision_resolved(self) -> TrainConfig:
        """This config with ``precision: auto`` replaced by the precision this machine trains fast in
        (:func:`~flow_omni.precision.resolve_precision`); itself when there is nothing to resolve."""
        precision = resolve_precision(self.precision, self.accelerator)
        return self if precision == self.precision else dataclasses.replace(self, precision=precision)

    def trainable_modules(self) -> list[str]:
        return sorted({m for g in self.trainable for m in GROUPS[g]})

    @property
    def out(self) -> Path:
        return Path(self.out_dir)


__all__ = ["AugmentConfig", "EvalSpec", "GROUPS", "ModelSpec", "OptimConfig", "TrainConfig"]
