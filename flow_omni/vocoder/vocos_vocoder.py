"""The Vocos vocoder: Vocos-24k log-mel ``(n_mels, F)`` → 24 kHz waveform.

:class:`Vocoder` wraps a ``vocos.Vocos`` (mel feature extractor + ConvNeXt backbone + ISTFT head)
built from a :class:`VocoderConfig`. The defaults are the architecture of
``charactr/vocos-mel-24khz``: 100 mel bins, n_fft 1024, hop 256, center padding,
backbone dim 512 / 1536 / 8 layers, 13.5 M parameters.

No Vocos weights ship with the library and the hub is usually unreachable here, so a
``Vocoder(config)`` is randomly initialised; trained weights come from :meth:`Vocoder.from_pretrained`:

* our format: ``config.json`` + ``model.safetensors`` (written by :meth:`Vocoder.save_pretrained`;
  the safetensors keys are exactly Vocos' own state-dict keys, so the weights are interchangeable);
* Vocos' hub format in a local directory: ``config.yaml`` + ``pytorch_model.bin`` (or
  ``model.safetensors``);
* a hub repo id such as ``"charactr/vocos-mel-24khz"`` (downloaded with ``huggingface_hub``).

Output length: ``(F - 1) * hop`` samples for ``padding="center"``, ``F * hop`` for ``"same"``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import nn
from vocos import Vocos
from vocos.feature_extractors import MelSpectrogramFeatures
from vocos.heads import ISTFTHead
from vocos.models import VocosBackbone

from flow_omni.audio.mel import MelConfig, check_mel
from flow_omni.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_checkpoint,
    load_state_strict,
    save_checkpoint,
)
from flow_omni.config import Config
from flow_omni.errors import CheckpointError, ConfigError, VocoderUnavailableError
from flow_omni.hub_fetch import hub_snapshot, looks_like_repo_id

VOCOS_CONFIG_NAME = "config.yaml"
VOCOS_WEIGHTS_NAME = "pytorch_model.bin"
DEFAULT_REPO_ID = "charactr/vocos-mel-24khz"

_HOW_TO_SUPPLY = (
    "To get a vocoder: download the checkpoint on a machine with hub access (config.yaml + "
    "pytorch_model.bin of e.g. charactr/vocos-mel-24khz) and pass its local directory to "
    "Vocoder.from_pretrained(dir); or train a Vocos on your own audio (the vocoder training recipe); "
    "or use flow_omni.vocoder.GriffinLim explicitly (low quality, no weights needed)."
)


@dataclasses.dataclass
class VocoderConfig(Config):
    """Architecture of a mel-input Vocos (defaults: ``charactr/vocos-mel-24khz``)."""

    sample_rate: int = 24000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 100
    padding: Literal["center", "same"] = "center"
    dim: int = 512
    intermediate_dim: int = 1536
    num_layers: int = 8

    def __post_init__(self) -> None:
        for name in ("dim", "intermediate_dim", "num_layers"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"VocoderConfig.{name} must be positive, got {getattr(self, name)}")
        self.mel_config()  # validates the mel fields with MelConfig's own checks

    def mel_config(self) -> MelConfig:
        """The log-mel this vocoder decodes (the speech-token space)."""
        return MelConfig(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            padding=self.padding,
        )

    def num_samples(self, num_frames: int) -> int:
        """Samples produced by decoding ``num_frames`` frames (offline)."""
        if self.padding == "center":
            return max(num_frames - 1, 0) * self.hop_length
        return num_frames * self.hop_length


def build_vocos(config: VocoderConfig) -> Vocos:
    """A randomly initialised ``vocos.Vocos`` with the architecture of ``config``."""
    c = config
    return Vocos(
        feature_extractor=MelSpectrogramFeatures(
            sample_rate=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, n_mels=c.n_mels, padding=c.padding
        ),
        backbone=VocosBackbone(
            input_channels=c.n_mels, dim=c.dim, intermediate_dim=c.intermediate_dim, num_layers=c.num_layers
        ),
        head=ISTFTHead(dim=c.dim, n_fft=c.n_fft, hop_length=c.hop_length, padding=c.padding),
    )


class Vocoder(nn.Module):
    """Vocos mel vocoder. ``decode((n_mels, F)) → (T,)``, ``decode((B, n_mels, F)) → (B, T)``."""

    def __init__(self, config: VocoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or VocoderConfig()
        self.vocos = build_vocos(self.config)
        self.eval()

    # ------------------------------------------------------------------ decoding
    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def backbone_receptive_field(self) -> int:
        """Mel frames on each side that influence one backbone output frame.

        Summed over the backbone's convolutions (embed k7 + one depthwise k7 per ConvNeXt block
        → ``3 * (1 + num_layers)`` = 27 for 8 layers); read from the modules rather than the
        config so that a different backbone would still be accounted for.
        """
        total = 0
        for m in self.vocos.backbone.modules():
            if isinstance(m, nn.Conv1d):
                total += m.dilation[0] * (m.kernel_size[0] - 1) // 2
        return total

    @property
    def istft_overlap(self) -> int:
        """Frames on each side whose ISTFT windows overlap one hop of output (2 for 1024/256)."""
        c = self.config
        return -(-c.n_fft // (2 * c.hop_length))

    @property
    def receptive_field(self) -> int:
        """Frames on each side that influence the audio of one frame: backbone + ISTFT overlap (29)."""
        return self.backbone_receptive_field + self.istft_overlap

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Differentiable decode without checks: ``(B, n_mels, F)`` → ``(B, T)``."""
        return self.vocos.head(self.vocos.backbone(mel))

    @torch.no_grad()
    def decode(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel → waveform.

        Args:
            mel: ``(n_mels, F)`` or ``(B, n_mels, F)``, natural-log mel as made by ``LogMel``.

        Returns:
            ``(T,)`` or ``(B, T)`` float waveform with ``T = config.num_samples(F)``.
        """
        check_mel(mel, self.config.n_mels, name="mel for Vocoder.decode")
        squeeze = mel.dim() == 2
        x = mel.unsqueeze(0) if squeeze else mel
        param = next(self.vocos.parameters())
        x = x.to(device=param.device, dtype=param.dtype)
        n_out = self.config.num_samples(x.shape[-1])
        if n_out == 0:
            # torch.istft cannot invert a single centred frame; its output would be empty anyway.
            audio = x.new_zeros(x.shape[0], 0)
        else:
            audio = self(x)
        return audio[0] if squeeze else audio

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (Vocos' own state-dict keys)."""
        return save_checkpoint(directory, "Vocoder", self.config.to_dict(), self.vocos.state_dict())

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path = DEFAULT_REPO_ID, *, revision: str | None = None) -> Vocoder:
        """Load from our directory format, a Vocos-format directory, or a hub repo id.

        Raises:
            CheckpointError: a local directory is foreign, truncated or inconsistent.
            VocoderUnavailableError: a hub id could not be fetched (offline, unreachable, missing).
        """
        path = Path(path_or_repo_id)
        if path.exists():
            return cls._from_local(path)
        repo_id = str(path_or_repo_id)
        if looks_like_repo_id(repo_id):
            return cls._from_vocos_dir(_download_from_hub(repo_id, revision))
        raise VocoderUnavailableError(
            f"{repo_id!r} is neither an existing directory nor a hub repo id. {_HOW_TO_SUPPLY}"
        )

    @classmethod
    def _from_local(cls, directory: Path) -> Vocoder:
        if not directory.is_dir():
            raise CheckpointError(f"{directory} is not a directory; pass the directory holding the checkpoint files")
        if (directory / CONFIG_NAME).is_file():
            meta, state = load_checkpoint(directory, "Vocoder")
            try:
                config = VocoderConfig.from_dict(meta.get("config") or {})
            except ConfigError as exc:
                raise CheckpointError(f"{directory / CONFIG_NAME}: invalid vocoder config ({exc})") from None
            model = cls(config)
            load_state_strict(model.vocos, state, directory / WEIGHTS_NAME)
            return model
        if (directory / VOCOS_CONFIG_NAME).is_file():
            return cls._from_vocos_dir(directory)
        raise CheckpointError(
            f"{directory} holds neither {CONFIG_NAME} (flow_omni format) nor {VOCOS_CONFIG_NAME} (Vocos format)"
        )

    @classmethod
    def _from_vocos_dir(cls, directory: Path) -> Vocoder:
        config = vocoder_config_from_vocos_yaml(directory / VOCOS_CONFIG_NAME)
        state = _load_vocos_weights(directory)
        model = cls(config)
        own = model.vocos.state_dict()
        # The mel filterbank and STFT windows are deterministic buffers; older exports may omit them.
        for key, value in own.items():
            if key not in state and (key.startswith("feature_extractor.") or key.endswith(".window")):
                state[key] = value
        load_state_strict(model.vocos, state, directory)
        return model


def vocoder_config_from_vocos_yaml(path: str | Path) -> VocoderConfig:
    """Parse a Vocos ``config.yaml`` (hub or training layout) into a :class:`VocoderConfig`."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise CheckpointError(f"{path} is not readable YAML ({exc})") from None
    if isinstance(raw, dict) and "model" in raw:  # a Lightning training config wraps the parts
        raw = (raw.get("model") or {}).get("init_args", {})
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(k), dict) for k in ("feature_extractor", "backbone", "head")
    ):
        raise CheckpointError(f"{path} is not a Vocos config (needs feature_extractor, backbone and head sections)")

    def part(name: str, cls_name: str) -> dict[str, Any]:
        section = raw[name]
        found = str(section.get("class_path", ""))
        if found.rsplit(".", 1)[-1] != cls_name:
            raise CheckpointError(f"{path}: {name} is {found or 'unspecified'}; only {cls_name} is supported")
        return dict(section.get("init_args") or {})

    fe, bb, hd = (
        part("feature_extractor", "MelSpectrogramFeatures"),
        part("backbone", "VocosBackbone"),
        part("head", "ISTFTHead"),
    )
    if bb.get("adanorm_num_embeddings") is not None:
        raise CheckpointError(f"{path}: conditional (AdaLayerNorm) backbones are not supported")
    try:
        config = VocoderConfig(
            sample_rate=int(fe.get("sample_rate", 24000)),
            n_fft=int(fe.get("n_fft", 1024)),
            hop_length=int(fe.get("hop_length", 256)),
            n_mels=int(fe.get("n_mels", 100)),
            padding=fe.get("padding", "center"),
            dim=int(bb["dim"]),
            intermediate_dim=int(bb["intermediate_dim"]),
            num_layers=int(bb["num_layers"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: incomplete or invalid Vocos config ({exc!r})") from None
    mismatches = [
        f"{a}={x} vs {b}={y}"
        for a, x, b, y in [
            ("backbone.input_channels", bb.get("input_channels", config.n_mels), "n_mels", config.n_mels),
            ("head.dim", hd.get("dim", config.dim), "backbone.dim", config.dim),
            ("head.n_fft", hd.get("n_fft", config.n_fft), "n_fft", config.n_fft),
            ("head.hop_length", hd.get("hop_length", config.hop_length), "hop_length", config.hop_length),
            ("head.padding", hd.get("padding", "same"), "padding", config.padding),
        ]
        if x != y
    ]
    if mismatches:
        raise CheckpointError(f"{path}: inconsistent Vocos config: {'; '.join(mismatches)}")
    return config


def _load_vocos_weights(directory: Path) -> dict[str, torch.Tensor]:
    bin_path, st_path = directory / VOCOS_WEIGHTS_NAME, directory / WEIGHTS_NAME
    if bin_path.is_file():
        try:
            # weights_only: never unpickle arbitrary objects from a downloaded file (docs/design.md).
            state = torch.load(bin_path, weights_only=True, map_location="cpu")
        except Exception as exc:  # truncated zip, pickle refused, ... all mean "bad file"
            raise CheckpointError(f"{bin_path} could not be read ({type(exc).__name__}: {exc})") from None
    elif st_path.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(st_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{st_path} could not be read ({exc}); truncated or not safetensors") from None
    else:
        raise CheckpointError(
            f"{directory} has {VOCOS_CONFIG_NAME} but neither {VOCOS_WEIGHTS_NAME} nor {WEIGHTS_NAME}"
        )
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # a Lightning .ckpt renamed
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{directory}: weights file is not a state dict of tensors")
    return dict(state)


def _download_from_hub(repo_id: str, revision: str | None) -> Path:
    """Fetch ``config.yaml`` + ``pytorch_model.bin``; the directory they landed in."""
    return hub_snapshot(
        repo_id,
        (VOCOS_CONFIG_NAME, VOCOS_WEIGHTS_NAME),
        what="Vocos checkpoint",
        revision=revision,
        hint=_HOW_TO_SUPPLY,
        error=VocoderUnavailableError,
    )
