"""Speech input: an audio encoder + a 2-layer MLP adapter producing LLM-width embeddings.

Two backends behind one module, :class:`SpeechEncoder`:

- ``kind="conv"``: a light encoder over the model's own continuous speech tokens
  (``ContinuousSpeechTokenizer.encode``, ``(F, r*n_mels)`` at ~23.4 Hz for r=4): masked same-padding
  Conv1d+GELU stack → optional non-causal ``nn.TransformerEncoder`` → adapter. One LLM position
  per token.
- ``kind="whisper"``: ``transformers`` ``WhisperEncoder`` (random init, a local pretrained Whisper
  as in Flow-Omni / Mini-Omni, or ``whisper_path="builtin:tiny.en"``: Whisper tiny.en converted
  offline from the ``eval`` extra's CTranslate2 weights, see :mod:`flow_omni.models.whisper_weights`)
  over 16 kHz Whisper log-mels (100 Hz). Whisper's conv stem halves the rate (50 Hz); ``downsample``
  consecutive frames are stacked (GLM-4-Voice / Mini-Omni style adapters; 4 → 12.5 Hz) before the
  adapter. Pretrained Whisper attends over a fixed 30 s window whatever the input length;
  ``whisper_window_seconds`` keeps only the first part of its positional table, so every item is
  padded to that shorter window instead (cheaper; accuracy vs the full window in benchmarks/README.md).

Discrete input (``input_units = K``, frozen Whisper only): each stacked frame is replaced by the
nearest of ``K`` k-means centroids fitted on the training inputs (:meth:`SpeechEncoder.fit_units`) and
read through an embedding table instead of the adapter, as models that listen through discrete
units do (GLM-4-Voice's Whisper-VQ tokens, HuBERT units). The continuous features and these units
then come from the same encoder at the same rate, so the two differ only in the quantisation.

Padding never leaks: conv inputs are zeroed outside each item before every convolution and padded
keys are masked in attention; Whisper sees each item padded *on its own* to its fixed
``2*max_source_positions`` frames, so batched and item-by-item outputs agree on valid positions.
Outputs beyond each item's length are exactly zero.

Shapes: ``B`` batch, ``F`` input frames (padded), ``C`` feature dims, ``M = output_length(F)``,
``W = llm_width``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from flow_omni.audio.io import TARGET_SAMPLE_RATE, resample, validate_audio
from flow_omni.config import Config
from flow_omni.errors import AudioError, CheckpointError, ConfigError, FlowOmniError, MelShapeError
from flow_omni.models.continuous_speech import EMBEDDING_SCALE
from flow_omni.models.whisper_weights import BUILTIN_PREFIX, BUILTIN_WHISPER, resolve_whisper_path, set_encoder_window
from flow_omni.quantize.kmeans import KMeansConfig, KMeansQuantizer

WHISPER_SAMPLE_RATE = 16000
WHISPER_HOP = 160
WHISPER_N_FFT = 400
#: Encoder frames per second after Whisper's stride-2 stem.
WHISPER_FRAME_RATE = WHISPER_SAMPLE_RATE / WHISPER_HOP / 2


@dataclasses.dataclass
class SpeechEncoderConfig(Config):
    """Hyper-parameters of :class:`SpeechEncoder` (stored in every checkpoint)."""

    kind: Literal["conv", "whisper"] = "conv"
    # conv backend
    channels: int = 256
    conv_layers: int = 2
    kernel_size: int = 5
    transformer_layers: int = 1
    heads: int = 4
    # whisper backend
    # Local dir of a pretrained HF Whisper model/encoder, or "builtin:tiny.en" (converted offline from the
    # eval extra's weights into the flow_omni cache); None = random init.
    whisper_path: str | None = None
    whisper_d_model: int = 256
    whisper_layers: int = 2
    whisper_heads: int = 4
    whisper_max_seconds: float = 10.0  # random init only: max_source_positions = 50 * seconds
    # Attend over only the first seconds of the encoder's positional table (pretrained: 30 s): inputs are
    # padded to this window instead of the full one, and longer audio is refused. None = the full window.
    whisper_window_seconds: float | None = None
    downsample: int = 4  # whisper: stack this many 50 Hz frames per LLM position
    # whisper: keep the encoder body fixed and run it inside featurize(), so that its outputs (50 Hz,
    # d_model wide) are the features. They can then be cached on disk like mels, and a training step
    # runs only the adapter. Augmented inputs are featurized (encoded) on the fly.
    frozen: bool = False
    # adapter
    adapter_hidden: int = 0  # 0 = the LLM width
    # RMSNorm the adapter's output with a gain starting at the text embeddings' scale (0.02). Without it
    # the encoder output at an audio position grows far larger than any embedding (row norms of about
    # 100 against 2 in a trained tiny model), so the residual updates of the LLM's layers are small
    # next to it and the audio positions pass through the layers nearly unchanged.
    output_norm: bool = False
    # Discrete input: > 0 replaces each stacked frame of a frozen Whisper by the nearest of this many
    # k-means centroids (fitted on the training inputs before training) and reads it through an
    # embedding table instead of the adapter. 0 = the continuous features.
    input_units: int = 0
    # Stacked frames the unit codebook is fitted on at most (a seeded subsample; 0 = all of them).
    units_fit_max: int = 200_000
    # Filled in when a pretrained Whisper is loaded, so a checkpoint rebuilds without the source dir.
    whisper_config: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("conv", "whisper"):
            raise ConfigError(f"SpeechEncoderConfig.kind must be 'conv' or 'whisper', got {self.kind!r}")
        for name in (
            "channels",
            "conv_layers",
            "kernel_size",
            "heads",
            "whisper_d_model",
            "whisper_layers",
            "whisper_heads",
            "downsample",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"SpeechEncoderConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ("transformer_layers", "adapter_hidden", "input_units", "units_fit_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"SpeechEncoderConfig.{name} must be an integer >= 0, got {value!r}")
        if self.frozen and self.kind != "whisper":
            raise ConfigError("SpeechEncoderConfig.frozen needs kind='whisper' (the conv encoder learns from scratch)")
        if self.input_units and not self.frozen:
            raise ConfigError(
                "SpeechEncoderConfig.input_units needs a frozen Whisper encoder (kind='whisper', frozen=true): "
                "the units are k-means codes of its fixed outputs"
            )
        if self.input_units and self.units_fit_max and self.units_fit_max < self.input_units:
            raise ConfigError(
                f"SpeechEncoderConfig.units_fit_max={self.units_fit_max} keeps fewer frames than "
                f"input_units={self.input_units}"
            )
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"SpeechEncoderConfig.kernel_size must be odd (same padding), got {self.kernel_size}")
        if self.transformer_layers and self.channels % self.heads:
            raise ConfigError(f"SpeechEncoderConfig: channels={self.channels} is not divisible by heads={self.heads}")
        if self.whisper_d_model % self.whisper_heads:
            raise ConfigError(
                f"SpeechEncoderConfig: whisper_d_model={self.whisper_d_model} is not divisible by "
                f"whisper_heads={self.whisper_heads}"
            )
        s = self.whisper_max_seconds
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or not 0.02 <= s <= 600:
            raise ConfigError(f"SpeechEncoderConfig.whisper_max_seconds must be within [0.02, 600], got {s!r}")
        if self.whisper_path is not None and not str(self.whisper_path).strip():
            raise ConfigError("SpeechEncoderConfig.whisper_path is empty; use null for a randomly initialised Whisper")
        if self.whisper_path is not None and str(self.whisper_path).startswith(BUILTIN_PREFIX):
            name = str(self.whisper_path)[len(BUILTIN_PREFIX) :]
            if name not in BUILTIN_WHISPER:
                raise ConfigError(
                    f"SpeechEncoderConfig.whisper_path: unknown builtin Whisper {name!r}; available: "
                    f"{[BUILTIN_PREFIX + n for n in BUILTIN_WHISPER]}"
                )
        w = self.whisper_window_seconds
        if w is not None and (
            isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or not 0.02 <= w <= 600
        ):
            raise ConfigError(
                f"SpeechEncoderConfig.whisper_window_seconds must be null or within [0.02, 600], got {w!r}"
            )


def _valid_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """``(B,)`` lengths → ``(B, size)`` bool, True at real positions."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


class _ConvBody(nn.Module):
    """Masked Conv1d+GELU stack → optional Transformer; one output frame per input frame."""

    downsample = 1

    def __init__(self, cfg: SpeechEncoderConfig, token_dim: int) -> None:
        super().__init__()
        ch, k = cfg.channels, cfg.kernel_size
        self.out_dim = ch
        self.convs = nn.ModuleList(
            nn.Conv1d(token_dim if i == 0 else ch, ch, k, padding=k // 2) for i in range(cfg.conv_layers)
        )
        self.transformer = None
        if cfg.transformer_layers:
            layer = nn.TransformerEncoderLayer(
                ch, cfg.heads, 4 * ch, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
            self.transformer = nn.TransformerEncoder(
                layer, cfg.transformer_layers, norm=nn.LayerNorm(ch), enable_nested_tensor=False
            )

    def out_frames(self, num_frames: int) -> int:
        return num_frames

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, F, C)`` → ``(B, F, channels)`` (padded positions hold garbage; the caller masks)."""
        valid = _valid_mask(lengths, x.shape[1])
        keep = valid[:, None, :].to(x.dtype)
        h = x.transpose(1, 2)
        for conv in self.convs:
            # Zero the padding before every conv so that no padded frame reaches a real one.
            h = F.gelu(conv(h * keep))
        h = h.transpose(1, 2)
        if self.transformer is not None:
            # An item with no frames would mask every key (NaN softmax); let it attend freely, its
            # outputs are zeroed anyway.
            pad = ~valid & valid.any(dim=1, keepdim=True)
            h = self.transformer(h, src_key_padding_mask=pad)
        return h


class _WhisperBody(nn.Module):
    """``WhisperEncoder`` over 100 Hz Whisper log-mels → ``ceil(F/2)`` frames at 50 Hz."""

    def __init__(self, cfg: SpeechEncoderConfig, from_checkpoint: bool) -> None:
        super().__init__()
        from transformers import WhisperConfig, WhisperFeatureExtractor

        self.downsample = cfg.downsample
        self.whisper_config = cfg.whisper_config  # recorded below when a pretrained Whisper is read
        extractor = None
        if cfg.whisper_path is not None and cfg.whisper_config and from_checkpoint:
            # Weights come from our own checkpoint; the pretrained dir need not exist here.
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            self.encoder = WhisperEncoder(WhisperConfig.from_dict(cfg.whisper_config))
        elif cfg.whisper_path is not None:
            path = resolve_whisper_path(cfg.whisper_path)  # "builtin:..." → the converted folder in the cache
            self.encoder = self._load_pretrained(path)
            self.whisper_config = json.loads(self.encoder.config.to_json_string())
            if (Path(path) / "preprocessor_config.json").is_file():
                extractor = WhisperFeatureExtractor.from_pretrained(path, local_files_only=True)
        else:
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            d = cfg.whisper_d_model
            self.encoder = WhisperEncoder(
                WhisperConfig(
                    d_model=d,
                    encoder_layers=cfg.whisper_layers,
                    encoder_attention_heads=cfg.whisper_heads,
                    encoder_ffn_dim=4 * d,
                    num_mel_bins=80,
                    max_source_positions=max(1, round(WHISPER_FRAME_RATE * cfg.whisper_max_seconds)),
                )
            )
        if cfg.whisper_window_seconds is not None:
            # After whisper_config is recorded (full table), so a checkpoint rebuilds the same way.
            full = int(self.encoder.config.max_source_positions)
            positions = max(1, round(WHISPER_FRAME_RATE * cfg.whisper_window_seconds))
            if positions > full:
                raise ConfigError(
                    f"SpeechEncoderConfig.whisper_window_seconds={cfg.whisper_window_seconds} exceeds "
                    f"this Whisper's window of {full / WHISPER_FRAME_RATE:g} s"
                )
            set_encoder_window(self.encoder, positions)
        self.num_mel_bins = int(self.encoder.config.num_mel_bins)
        self.n_frames = 2 * int(self.encoder.config.max_source_positions)  # exact input length Whisper takes
        self.out_dim = int(self.encoder.config.d_model)
        if extractor is None:
            extractor = WhisperFeatureExtractor(
                feature_size=self.num_mel_bins,
                sampling_rate=WHISPER_SAMPLE_RATE,
                hop_length=WHISPER_HOP,
                n_fft=WHISPER_N_FFT,
            )
        got = (extractor.feature_size, extractor.sampling_rate, extractor.hop_length, extractor.n_fft)
        if got != (self.num_mel_bins, WHISPER_SAMPLE_RATE, WHISPER_HOP, WHISPER_N_FFT):
            raise CheckpointError(
                f"{cfg.whisper_path}: unsupported Whisper feature extractor (mels, sr, hop, n_fft)"
                f"={got}; expected ({self.num_mel_bins}, 16000, 160, 400)"
            )
        self.feature_extractor = extractor

    @staticmethod
    def _load_pretrained(path: str) -> nn.Module:
        from transformers import WhisperModel
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        kwargs = dict(local_files_only=True, dtype=torch.float32, output_loading_info=True)
        try:
            # Full Whisper checkpoints (WhisperModel / WhisperForConditionalGeneration) ...
            model, info = WhisperModel.from_pretrained(path, **kwargs)
            if not any(k.startswith("encoder.") for k in info["missing_keys"]):
                return model.encoder.train()  # from_pretrained returns eval mode; follow the parent instead
            # ... or an encoder saved on its own.
            encoder, info = WhisperEncoder.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"could not load a Whisper model from {path!r} offline "
                f"({str(exc).splitlines()[0]}); pass a local Whisper directory"
            ) from None
        if info["missing_keys"]:
            raise CheckpointError(
                f"{path!r} holds no complete Whisper encoder (missing e.g. {sorted(info['missing_keys'])[:3]})"
            )
        return encoder.train()

    @property
    def max_seconds(self) -> float:
        return self.n_frames * WHISPER_HOP / WHISPER_SAMPLE_RATE

    def out_frames(self, num_frames: int) -> int:
        return -(-num_frames // 2)

    def featurize(self, audio: torch.Tensor) -> torch.Tensor:
        """24 kHz ``(T,)`` → Whisper log-mel ``(ceil(T16/160), n_mels)`` of the real audio only."""
        seconds = audio.shape[-1] / TARGET_SAMPLE_RATE
        if seconds > self.max_seconds:
            raise AudioError(
                f"audio is {seconds:.2f} s long but this Whisper speech encoder takes at most "
                f"{self.max_seconds:.2f} s (whisper_window_seconds, whisper_max_seconds, or 30 s for "
                "pretrained Whisper); cut it into shorter segments"
            )
        x16 = resample(audio.detach().float().cpu(), TARGET_SAMPLE_RATE, WHISPER_SAMPLE_RATE)
        n_samples = self.n_frames * WHISPER_HOP
        feats = self.feature_extractor(
            x16.numpy(),
            sampling_rate=WHISPER_SAMPLE_RATE,
            return_tensors="pt",
            padding="max_length",
            max_length=n_samples,
            truncation=True,
        ).input_features
        num = min(-(-x16.shape[-1] // WHISPER_HOP), self.n_frames)
        return feats[0, :, :num].T.contiguous().float().to(audio.device)

    @torch.no_grad()
    def encode(self, feats: torch.Tensor) -> torch.Tensor:
        """One item's Whisper log-mel ``(F, n_mels)`` → encoder outputs ``(ceil(F/2), d_model)``, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            out = self(feats[None], torch.tensor([feats.shape[0]], device=feats.device))
        finally:
            self.train(was_training)
        return out[0]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, F, n_mels)`` → ``(B, ceil(F/2), d_model)``; rows of empty items are zero."""
        if int(lengths.max()) > self.n_frames:
            raise MelShapeError(
                f"Whisper features have {int(lengths.max())} frames; this encoder takes at most "
                f"{self.n_frames} ({self.max_seconds:.2f} s)"
            )
        B, n_in = x.shape[0], x.shape[1]
        x = x[:, : self.n_frames]
        valid = _valid_mask(lengths, x.shape[1])[..., None]
        # Pad each item the way Whisper's own extractor pads: zero audio → log-mel floor = item max - 2.
        floor = x.masked_fill(~valid, float("-inf")).amax(dim=(1, 2)) - 2.0
        floor = torch.where(torch.isfinite(floor), floor, torch.zeros_like(floor))[:, None, None]
        x = torch.where(valid, x, floor)
        x = torch.cat([x, floor.expand(B, self.n_frames - x.shape[1], x.shape[2])], dim=1)
        out = x.new_zeros(B, self.out_frames(n_in), self.out_dim)
        rows = (lengths > 0).nonzero(as_tuple=True)[0]
        if len(rows):  # skip items without audio: Whisper costs the same for 1 s as for its full window
            h = self.encoder(x[rows].transpose(1, 2)).last_hidden_state
            n = min(out.shape[1], h.shape[1])
            out = out.index_put((rows,), F.pad(h[:, :n], (0, 0, 0, out.shape[1] - n)))
        return out


class SpeechEncoder(nn.Module):
    """Audio features → LLM-width embeddings (encoder body + frame stacking + MLP adapter)."""

    def __init__(
        self, config: SpeechEncoderConfig, token_dim: int, llm_width: int, *, from_checkpoint: bool = False
    ) -> None:
        """``from_checkpoint=True``: build a pretrained Whisper from ``config.whisper_config`` (weights come
        from the caller's checkpoint) instead of reading ``whisper_path``."""
        super().__init__()
        if token_dim < 1 or llm_width < 1:
            raise ConfigError(f"SpeechEncoder: token_dim and llm_width must be >= 1, got {token_dim}, {llm_width}")
        self.token_dim = token_dim
        self.llm_width = llm_width
        self.body = _ConvBody(config, token_dim) if config.kind == "conv" else _WhisperBody(config, from_checkpoint)
        if config.kind == "whisper" and self.body.whisper_config != config.whisper_config:
            # A new config records the pretrained architecture; the caller's stays as it was.
            config = dataclasses.replace(config, whisper_config=self.body.whisper_config)
        self.config = config
        self.frozen = config.frozen
        if self.frozen:
            self.body.requires_grad_(False)
        self._spec: dict | None = None
        self.downsample = self.body.downsample
        stacked = self.body.out_dim * self.downsample
        self.units: KMeansQuantizer | None = None
        if config.input_units:
            # The codebook is a buffer of the quantiser (saved with the model); only the embedding trains.
            self.units = KMeansQuantizer(
                KMeansConfig(dim=stacked, codebook_size=config.input_units, max_tokens=config.units_fit_max)
            )
            self.adapter = nn.Embedding(config.input_units, llm_width)
            nn.init.normal_(self.adapter.weight, std=EMBEDDING_SCALE)  # on the scale of the text embeddings
            return
        hidden = config.adapter_hidden or llm_width
        layers = [nn.Linear(stacked, hidden), nn.GELU(), nn.Linear(hidden, llm_width)]
        if config.output_norm:
            norm = nn.RMSNorm(llm_width, eps=1e-6)
            nn.init.constant_(norm.weight, EMBEDDING_SCALE)
            layers.append(norm)
        self.adapter = nn.Sequential(*layers)

    @property
    def feature_dim(self) -> int:
        """``C``: ``token_dim`` (conv), Whisper's mel bins, or (frozen Whisper) its width."""
        if self.config.kind == "conv":
            return self.token_dim
        return self.body.out_dim if self.frozen else self.body.num_mel_bins

    def feature_spec(self) -> dict:
        """What the features depend on, for a disk cache key: the config, and a frozen body's weights.

        Built on the first call (after any checkpoint load) and kept: the data loader asks per item,
        and neither the config nor a frozen body changes.
        """
        if self._spec is None:
            # The adapter runs after the features, so its settings are not part of what they depend on.
            after = ("adapter_hidden", "output_norm", "input_units", "units_fit_max")
            spec = {k: v for k, v in self.config.to_dict().items() if k not in after}
            if self.frozen:
                spec["weights"] = float(sum(p.double().abs().sum() for p in self.body.parameters()))
            self._spec = spec
        return self._spec

    @property
    def max_seconds(self) -> float | None:
        """Longest audio :meth:`featurize` accepts (None = unlimited)."""
        return self.body.max_seconds if self.config.kind == "whisper" else None

    def featurize(self, audio: torch.Tensor, tokenizer=None) -> torch.Tensor:
        """24 kHz waveform ``(T,)`` → encoder input features ``(F, C)``.

        conv: ``tokenizer.encode(audio)`` (a :class:`ContinuousSpeechTokenizer`), ``C = token_dim``;
        whisper: 16 kHz Whisper log-mel of the real audio only, ``F = ceil(T16 / 160)``, ``C = n_mels``;
        frozen whisper: the encoder's outputs on it, ``F = ceil(T16 / 320)`` (50 Hz), ``C = d_model``.
        Raises AudioError for bad audio (or audio longer than Whisper's window).
        """
        validate_audio(audio, name="speech encoder input")
        if audio.dim() != 1:
            raise AudioError(f"speech encoder input: expected mono (T,) audio, got shape {tuple(audio.shape)}")
        if self.config.kind == "whisper":
            feats = self.body.featurize(audio)
            return self.body.encode(feats) if self.frozen else feats
        if tokenizer is None:
            raise ValueError("the conv speech encoder featurizes with the model's ContinuousSpeechTokenizer; pass it")
        if tokenizer.token_dim != self.token_dim:
            raise MelShapeError(
                f"tokenizer makes {tokenizer.token_dim}-dim tokens; this encoder takes {self.token_dim}"
            )
        return tokenizer.encode(audio)

    def output_length(self, num_frames: int) -> int:
        """How many LLM positions ``num_frames`` input features become."""
        if num_frames < 0:
            raise ValueError(f"num_frames must be >= 0, got {num_frames}")
        frames = int(num_frames) if self.frozen else self.body.out_frames(int(num_frames))
        return -(-frames // self.downsample)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(B, F, C)`` (padded), ``lengths`` ``(B,)`` → embeddings ``(B, M, W)``, ``out_lengths`` ``(B,)``.

        ``M = output_length(F)``; ``out_lengths[i] = output_length(lengths[i])``; positions at or beyond
        ``out_lengths[i]`` are zero. Items may have length 0 (no audio).
        """
        if features.dim() != 3 or features.shape[-1] != self.feature_dim:
            raise MelShapeError(
                f"speech encoder features must be (B, F, {self.feature_dim}), got {tuple(features.shape)}"
            )
        lengths = lengths.to(device=features.device, dtype=torch.long)
        if (
            lengths.shape != (features.shape[0],)
            or bool((lengths < 0).any())
            or bool((lengths > features.shape[1]).any())
        ):
            raise MelShapeError(f"lengths {lengths.tolist()} do not fit features of shape {tuple(features.shape)}")
        h, out_lengths = self._stacked(features, lengths)
        if self.units is not None:
            if not self.units.is_fitted:
                raise FlowOmniError("this speech encoder reads discrete units, but its codebook was never fitted")
            # Distances in float32 also under autocast: a bf16 addmm would pick other codes in training
            # than at test time.
            with torch.autocast(device_type=h.device.type, enabled=False):
                codes = self.units.encode(h.float())[..., 0]
            emb = self.adapter(codes)
        else:
            emb = self.adapter(h)
        return emb * _valid_mask(out_lengths, h.shape[1])[..., None].to(emb.dtype), out_lengths

    def _stacked(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Body outputs with ``downsample`` frames stacked: ``(B, M, ds * D)`` (zero past each length), ``(B,)``."""
        if self.frozen:  # the features are the body's outputs already (featurize ran it)
            h, n_len = features, lengths
        else:
            h = self.body(features, lengths)  # (B, N, D)
            n_len = torch.div(lengths + 1, 2, rounding_mode="floor") if self.config.kind == "whisper" else lengths
        h = h * _valid_mask(n_len, h.shape[1])[..., None].to(h.dtype)
        ds = self.downsample
        if ds > 1:  # stack ds consecutive frames; the tail group is zero-padded
            h = F.pad(h, (0, 0, 0, (-h.shape[1]) % ds))
            h = h.reshape(h.shape[0], h.shape[1] // ds, ds * h.shape[2])
        return h, torch.div(n_len + ds - 1, ds, rounding_mode="floor")

    @property
    def needs_fit(self) -> bool:
        """Whether this encoder reads discrete units whose codebook is not fitted yet."""
        return self.units is not None and not self.units.is_fitted

    @torch.no_grad()
    def fit_units(self, features: Iterable[torch.Tensor], *, progress: bool = False) -> None:
        """Fit the unit codebook on features ``(F_i, C)`` of training inputs (what :meth:`featurize` returns).

        Each item is stacked as :meth:`forward` stacks it, so the codebook sees the vectors it will code.
        """
        if self.units is None:
            raise ConfigError("fit_units: this speech encoder reads continuous features (input_units is 0)")

        def stacked():  # streamed: the fit keeps a bounded subsample (units_fit_max), not every frame
            for f in features:
                h, n = self._stacked(f[None].float(), torch.tensor([f.shape[0]]))
                yield h[0, : int(n[0])]

        self.units.fit(stacked(), progress=progress)

    def freeze_encoder(self, freeze: bool = True) -> None:
        """(Un)freeze the encoder body, keeping the adapter trainable (adapter-alignment stages)."""
        self.body.requires_grad_(not freeze)
        if self.config.kind == "whisper":
            self.body.encoder.embed_positions.requires_grad_(False)  # fixed sinusoids in Whisper

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def build_speech_encoder(
    config: SpeechEncoderConfig, token_dim: int, llm_width: int, *, from_checkpoint: bool = False
) -> SpeechEncoder:
    """Factory alias of :class:`SpeechEncoder` (both backends live behind one class)."""
    return SpeechEncoder(config, token_dim, llm_width, from_checkpoint=from_checkpoint)
