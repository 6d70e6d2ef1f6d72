"""FlowOmni: a ``transformers`` causal LM that reads and speaks continuous speech tokens.

Input side: at every position the embedding is the sum of the text-token embedding (the
backbone's own table), a speech-state embedding, a linear projection of the speech token fed at
that position, and, at prompt positions that hold input audio, the speech encoder's output.

Output side: from the backbone's last hidden state ``h`` (B, L, W)
* the backbone's own LM head gives next-text logits,
* a linear state head gives next speech-state logits (pad / start / generating / stop),
* the post-net (a few causal transformer blocks) turns ``h`` into the condition of the speech
  head (:mod:`flow_omni.models.speech_head`), which predicts the next speech payload: the flow
  head trained with conditional flow matching on the next continuous token, or the code softmax of
  a discrete baseline. The model only talks to the :class:`SpeechHead` interface.

Loss = ``w_text * CE_text + w_state * CE_state + w_flow * L_speech + w_ctc * CTC`` (weights in the
config); each term is returned separately. The optional CTC term reads the speech encoder's output
at the LLM's rate through the LM head (plus a blank logit) and spells the prompt audio's transcript,
which pushes the encoder output towards the text embeddings the LLM already reads.
Generation lives in :mod:`flow_omni.models.generation`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from flow_omni.audio.normalize import MelStats
from flow_omni.audio.speech_tokens import ContinuousSpeechTokenizer, SpeechTokenConfig
from flow_omni.checkpoint import load_checkpoint, load_state_strict, save_checkpoint
from flow_omni.config import Config
from flow_omni.errors import ConfigError, FlowOmniError
from flow_omni.layout import (
    IGNORE,
    NUM_STATES,
    STATE_GEN,
    Batch,
    LayoutConfig,
    Sample,
    alignment_problem,
    collate,
    layout_sample,
)
from flow_omni.model_card import TrainingRecord, write_model_card
from flow_omni.models.backbone import (
    PRESETS,
    BackboneConfig,
    build_backbone,
    build_postnet,
    hidden_size,
    locate_backbone,
)
from flow_omni.models.coarse_fine_speech import CoarseFineSpeech
from flow_omni.models.continuous_speech import ContinuousSpeech
from flow_omni.models.flow_head import FlowHeadConfig
from flow_omni.models.generation import AUDIO_CHUNK_FRAMES, GenerationConfig, generate, stream
from flow_omni.models.speech_codes import CodeSpeech
from flow_omni.models.speech_encoder import SpeechEncoder, SpeechEncoderConfig
from flow_omni.models.speech_head import EMBEDDING_SCALE, SpeechHead
from flow_omni.quantize.build import build_quantizer, quantizer_config
from flow_omni.text.tokenizer import SPECIAL_TOKENS, CharTokenizer, HFTokenizer, TextTokenizer, load_text_tokenizer


@dataclasses.dataclass
class LossWeights(Config):
    text: float = 1.0
    state: float = 1.0
    flow: float = 1.0
    #: coarse_fine tokens: the cross-entropy of the next token's k-means code (its other models have none)
    code: float = 1.0
    #: auxiliary CTC loss of the speech encoder's output (at the LLM's rate) against the transcript of
    #: the prompt audio, through the backbone's own LM head plus a blank logit; 0 = off (no blank head).
    #: Its logits span the whole vocabulary at every audio position: cheap for the presets' character
    #: vocabulary, gigabytes per batch for a pretrained LLM's ~150k tokens.
    ctc: float = 0.0

    def __post_init__(self) -> None:
        for name in ("text", "state", "flow", "code", "ctc"):
            if getattr(self, name) < 0:
                raise ConfigError(f"LossWeights.{name} must be >= 0, got {getattr(self, name)}")


@dataclasses.dataclass
class FlowOmniConfig(Config):
    """Everything needed to rebuild a FlowOmni model (stored in ``config.json``)."""

    backbone: BackboneConfig
    flow: FlowHeadConfig
    speech: SpeechTokenConfig = dataclasses.field(default_factory=SpeechTokenConfig)
    encoder: SpeechEncoderConfig = dataclasses.field(default_factory=SpeechEncoderConfig)
    layout: LayoutConfig = dataclasses.field(default_factory=LayoutConfig)
    postnet_layers: int = 1
    #: std of Gaussian noise added to teacher-forced speech tokens at the LLM input during training,
    #: so that the model learns to read its own (imperfect) samples back; 0 disables it.
    speech_input_noise: float = 0.0
    #: continuous tokens: RMSNorm the projected token, gain starting at the embeddings' scale, so that
    #: it does not drown the text embedding it is summed with (see flow_omni.models.continuous_speech)
    speech_input_norm: bool = False
    #: coarse_fine only: the LLM reads each speech token's k-means centroid instead of the token itself,
    #: so that its own (refined) tokens read back as what it was trained on (the input a k-means model
    #: reads, in continuous form; see flow_omni.models.coarse_fine_speech)
    speech_input_centroids: bool = False
    text_tokenizer: dict = dataclasses.field(default_factory=lambda: {"kind": "char"})
    loss_weights: LossWeights = dataclasses.field(default_factory=LossWeights)
    #: the speech stream: "continuous" (flow head), the codes of a quantiser trained on the same
    #: tokens — "kmeans" (one codebook) or "rvq" (residual levels); see flow_omni.models.speech_codes —
    #: or "coarse_fine": continuous tokens, each predicted as a k-means code and refined from its
    #: centroid by the flow head (flow_omni.models.coarse_fine_speech)
    tokens: Literal["continuous", "kmeans", "rvq", "coarse_fine"] = "continuous"
    #: the quantiser's config (KMeansConfig / RVQConfig fields) for discrete tokens and coarse_fine's codes
    quantizer: dict | None = None
    #: Mini-Omni per-level delay for multi-level codes (sets layout.speech_tail = levels - 1)
    level_delay: bool = True

    def __post_init__(self) -> None:
        if self.tokens != "continuous":
            if not self.quantizer:
                raise ConfigError(
                    f"FlowOmniConfig: tokens={self.tokens!r} needs a quantizer config "
                    "(e.g. {'codebook_size': 256}; for rvq also 'num_levels')"
                )
            qcfg = quantizer_config(self.quantizer_kind, self.quantizer, dim=self.speech.token_dim)
            self.quantizer = qcfg.to_dict()
            tail = qcfg.levels - 1 if (self.level_delay and qcfg.levels > 1) else 0
            if self.layout.speech_tail != tail:
                self.layout = dataclasses.replace(self.layout, speech_tail=tail)
        elif self.quantizer is not None:
            raise ConfigError("FlowOmniConfig: a quantizer config was given but tokens='continuous'")
        if self.speech_input_centroids and self.tokens != "coarse_fine":
            raise ConfigError(
                "FlowOmniConfig: speech_input_centroids reads k-means centroids, which only tokens='coarse_fine' "
                f"has; got tokens={self.tokens!r}"
            )
        if self.tokens == "coarse_fine" and self.flow.own_previous > 0:
            raise ConfigError(
                "FlowOmniConfig: tokens='coarse_fine' starts the flow head at the predicted code's centroid, "
                f"not at the previous token, so flow.own_previous must be 0 (got {self.flow.own_previous})"
            )
        if self.postnet_layers < 0:
            raise ConfigError(f"FlowOmniConfig.postnet_layers must be >= 0, got {self.postnet_layers}")
        if self.flow.token_dim != self.speech.token_dim:
            raise ConfigError(
                f"FlowOmniConfig: flow.token_dim={self.flow.token_dim} but the speech token has "
                f"r={self.speech.r} x {self.speech.mel.n_mels} = {self.speech.token_dim} dims"
            )

    @property
    def quantizer_kind(self) -> str:
        """The kind of ``quantizer``: coarse_fine's codes are k-means ones."""
        return "kmeans" if self.tokens == "coarse_fine" else self.tokens

    @classmethod
    def preset(cls, name: str = "tiny", *, r: int = 4, **overrides) -> FlowOmniConfig:
        """A CPU-trainable configuration: ``tiny`` (≈5 M parameters) or ``small`` (≈30 M)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
        p = PRESETS[name]
        tok = CharTokenizer()
        hf = dict(p["backbone"], vocab_size=tok.vocab_size, max_position_embeddings=4096, tie_word_embeddings=True)
        speech = overrides.pop("speech", None) or SpeechTokenConfig(r=r)
        flow = dict(p["flow"], token_dim=speech.token_dim, cond_dim=hf["hidden_size"])
        flow.update(overrides.pop("flow", {}))
        data = dict(
            backbone=BackboneConfig(hf_config=hf),
            flow=FlowHeadConfig.from_dict(flow),
            speech=speech,
            encoder=SpeechEncoderConfig.from_dict(p["encoder"]),
            postnet_layers=p["postnet_layers"],
            text_tokenizer=tok.spec(),
        )
        data.update(overrides)
        return cls(**data)

    @classmethod
    def from_pretrained_backbone(
        cls,
        path: str,
        *,
        gguf_file: str | None = None,
        r: int = 4,
        flow_width: int = 512,
        flow_depth: int = 3,
        postnet_layers: int = 1,
        **overrides,
    ) -> FlowOmniConfig:
        """Config around a pretrained causal LM (a local folder, or a hub id fetched into the Hugging Face
        cache when the hub can be reached); its own tokenizer becomes the text tokenizer."""
        from transformers import AutoConfig

        path = locate_backbone(str(path), gguf_file)
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        hf = AutoConfig.from_pretrained(path, local_files_only=True, **kwargs)
        width = int(getattr(hf, "hidden_size", 0) or hf.n_embd)
        speech = overrides.pop("speech", None) or SpeechTokenConfig(r=r)
        return cls(
            backbone=BackboneConfig(path=str(path), gguf_file=gguf_file, hf_config=hf.to_dict()),
            flow=FlowHeadConfig(token_dim=speech.token_dim, cond_dim=width, width=flow_width, depth=flow_depth),
            speech=speech,
            postnet_layers=postnet_layers,
            text_tokenizer={"kind": "hf", "path": str(path), "gguf_file": gguf_file},
            **overrides,
        )


@dataclass
class FlowOmniOutput:
    """Losses of one forward pass (each term separately, and their weighted sum)."""

    loss: torch.Tensor
    text_loss: torch.Tensor
    state_loss: torch.Tensor
    flow_loss: torch.Tensor
    num_text: int  # positions that count in each term's mean
    num_speech: int
    num_state: int = 0
    ctc_loss: torch.Tensor | None = None  # None when the CTC term is off or the batch has no transcripts
    num_ctc: int = 0  # items with a transcript
    code_loss: torch.Tensor | None = None  # coarse_fine's code cross-entropy (None for other heads)

    # ``flow_loss`` is the speech-token term: CFM for continuous tokens, code cross-entropy for the
    # discrete baselines (kept under one name so logs and plots compare the variants directly), and
    # for coarse_fine the CFM part alone, its code cross-entropy being ``code_loss``.

    def as_dict(self) -> dict[str, float]:
        return {
            "loss": self.loss.item(),
            "text": self.text_loss.item(),
            "state": self.state_loss.item(),
            "flow": self.flow_loss.item(),
            **({} if self.code_loss is None else {"code": self.code_loss.item()}),
            **({} if self.ctc_loss is None else {"ctc": self.ctc_loss.item()}),
        }


class FlowOmni(nn.Module):
    """The speech LLM. Build with ``FlowOmni(FlowOmniConfig.preset("tiny"))`` or ``from_pretrained``."""

    def __init__(
        self, config: FlowOmniConfig, *, _from_checkpoint: bool = False, _tokenizer_dir: Path | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.text_tokenizer = self._build_text_tokenizer(config, _tokenizer_dir)
        self.speech_tokenizer = ContinuousSpeechTokenizer(config.speech)
        self.backbone = build_backbone(config.backbone, from_checkpoint=_from_checkpoint)
        if self.backbone.get_input_embeddings().num_embeddings < self.text_tokenizer.vocab_size:
            self.backbone.resize_token_embeddings(self.text_tokenizer.vocab_size)
        # Record the exact architecture so that from_pretrained rebuilds it without the source files
        # (in a new config: the caller's stays as it was).
        self.config = config = dataclasses.replace(
            config, backbone=dataclasses.replace(config.backbone, hf_config=self.backbone.config.to_dict())
        )
        width = hidden_size(self.backbone)
        if config.flow.cond_dim != width:
            raise ConfigError(f"FlowOmniConfig: flow.cond_dim={config.flow.cond_dim} but the backbone width is {width}")
        self.width = width
        self.state_embed = nn.Embedding(NUM_STATES, width)
        self.encoder = SpeechEncoder(config.encoder, config.speech.token_dim, width, from_checkpoint=_from_checkpoint)
        self.config = config = dataclasses.replace(config, encoder=self.encoder.config)
        self.state_head = nn.Linear(width, NUM_STATES)
        self.postnet = build_postnet(config.postnet_layers, width, attn=config.backbone.attn_implementation)
        # Speech and state embeddings are summed with the text embedding, so they start at its scale. A
        # pretrained LLM's rows are far from the 0.02 of initialisation (SmolLM2-135M: RMS 0.13); the
        # presets (and a checkpoint, whose weights replace these) keep 0.02.
        scale = EMBEDDING_SCALE
        if config.backbone.path is not None and not _from_checkpoint:
            scale = float(self.backbone.get_input_embeddings().weight.detach().pow(2).mean().sqrt())
        nn.init.normal_(self.state_embed.weight, std=scale)
        self.speech = self._build_speech_head(config, width, scale)
        # The CTC term's blank logit (its other logits are the LM head's): only when the term is on, so
        # that models without it keep their exact parameter set.
        self.ctc_blank = nn.Linear(width, 1) if config.loss_weights.ctc > 0 else None
        self.special = {t: self.text_tokenizer.special_id(t) for t in SPECIAL_TOKENS}

    @staticmethod
    def _build_speech_head(config: FlowOmniConfig, width: int, embedding_scale: float) -> SpeechHead:
        """The one place that maps ``config.tokens`` to a :class:`SpeechHead`."""
        if config.tokens == "continuous":
            return ContinuousSpeech(
                config.flow,
                width,
                input_noise=config.speech_input_noise,
                input_norm=config.speech_input_norm,
                embedding_scale=embedding_scale,
            )
        quantizer = build_quantizer(config.quantizer_kind, config.quantizer, dim=config.speech.token_dim)
        if config.tokens == "coarse_fine":
            return CoarseFineSpeech(
                config.flow,
                quantizer,
                width,
                input_noise=config.speech_input_noise,
                input_norm=config.speech_input_norm,
                embedding_scale=embedding_scale,
                read_centroids=config.speech_input_centroids,
            )
        return CodeSpeech(quantizer, width, delay=config.level_delay, embedding_scale=embedding_scale)

    @staticmethod
    def _build_text_tokenizer(config: FlowOmniConfig, directory: Path | None) -> TextTokenizer:
        spec = config.text_tokenizer
        if spec.get("kind") == "hf" and directory is None:
            kwargs = {"gguf_file": spec["gguf_file"]} if spec.get("gguf_file") else {}
            return HFTokenizer.from_pretrained(spec["path"], local_files_only=True, **kwargs)
        return load_text_tokenizer(spec, directory)

    # ------------------------------------------------------------------------------ data → batch
    @property
    def device(self) -> torch.device:
        return self.state_head.weight.device

    def prepare_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """24 kHz waveform ``(T,)`` → encoder input features ``(F, C)`` for :class:`Sample.prompt_audio`."""
        return self.encoder.featurize(audio, self.speech_tokenizer)

    def fit_speech_stats(
        self, audios: Iterable[torch.Tensor] | None = None, *, mels: Iterable[torch.Tensor] | None = None
    ) -> MelStats:
        """Fit the speech tokens' per-bin normalisation on waveforms ``(T,)`` or raw log-mels
        ``(n_mels, F)`` and record it in ``config.speech`` (so checkpoints carry it)."""
        if (audios is None) == (mels is None):
            raise ValueError("pass either audios or mels")
        stats = self.speech_tokenizer.fit(audios) if mels is None else self.speech_tokenizer.fit_mels(mels)
        self.config = dataclasses.replace(self.config, speech=self.speech_tokenizer.config)
        return stats

    def fit_speech_head(self, tokens, *, progress: bool = False) -> None:
        """Fit what the speech head learns before training (a quantiser's codebooks) on speech
        tokens ``(N, D)`` (or an iterable of ``(n_i, D)``) in the model's current normalisation,
        and record it in ``config.quantizer``. Heads with nothing to fit raise FlowOmniError."""
        fitted = self.speech.fit(tokens, tokenizer=self.speech_tokenizer, progress=progress)
        self.config = dataclasses.replace(self.config, quantizer=fitted)

    def encode_speech(self, audio: torch.Tensor) -> torch.Tensor:
        """24 kHz waveform → target speech tokens ``(N, token_dim)`` for :class:`Sample.target_speech`."""
        return self.speech_tokenizer.encode(audio)

    def _text_ids(self, text: str | None, what: str) -> list[int]:
        if text is None:
            return []
        ids = self.text_tokenizer.encode(text)
        if text.strip() == "" or not ids:
            raise FlowOmniError(f"{what} is empty; expected some text")
        return ids

    def aligned_target(self, s: Sample) -> tuple[list[int], list[tuple[int, int]]]:
        """A speech target's text ids for the ``aligned`` layout and each word's ``(first id index, speech
        token index)``: the text is cut before each word (with the spaces before it, as GPT-2-style BPE
        vocabularies attach them) and the pieces are tokenised one by one, so that every id belongs to
        one word. Text before the first onset (a word espeak gave no event) is due at time 0."""
        text, words = s.target_text, s.target_alignment
        if not words:
            raise FlowOmniError(
                f"the aligned layout needs word onsets for a {s.task} target (Sample.target_alignment; a "
                "manifest's target_alignment / answer_alignment, which flow-omni corpus writes)"
            )
        problem = alignment_problem(list(words), text)
        if problem:
            raise FlowOmniError(f"target_alignment of a {s.task} sample {problem}")
        cuts, times = [], []
        for char, seconds in words:
            while char > 0 and text[char - 1].isspace():
                char -= 1
            if char > 0 and not cuts:
                cuts.append(0)
                times.append(0.0)
            cuts.append(char)
            times.append(seconds)
        rate = self.speech_tokenizer.config.token_rate
        n_tokens = s.target_speech.shape[0] if s.target_speech is not None else 1  # None: build_response says so
        ids: list[int] = []
        onsets: list[tuple[int, int]] = []
        for start, end, seconds in zip(cuts, [*cuts[1:], len(text)], times):
            piece = self.text_tokenizer.encode(text[start:end]) if end > start else []
            if piece:
                onsets.append((len(ids), min(int(seconds * rate), n_tokens - 1)))
                ids += piece
        if not ids:
            raise FlowOmniError(f"target_text of a {s.task} sample is empty; expected some text")
        return ids, onsets

    def collate(self, samples: Sequence[Sample], *, left_pad: bool = False, with_targets: bool = True) -> Batch:
        """Lay out and pad samples (targets included unless ``with_targets=False``)."""
        seqs, feats = [], []
        D = self.config.speech.token_dim
        for s in samples:
            if s.prompt_audio is not None and (s.prompt_audio.dim() != 2 or s.prompt_audio.shape[0] == 0):
                raise FlowOmniError(
                    f"prompt_audio must be encoder features (frames, dims) from model.prepare_audio(), "
                    f"got shape {tuple(s.prompt_audio.shape)}"
                )
            if s.target_speech is not None and (s.target_speech.dim() != 2 or s.target_speech.shape[-1] != D):
                raise FlowOmniError(f"target_speech must be (N, {D}) speech tokens, got {tuple(s.target_speech.shape)}")
            n_audio = self.encoder.output_length(s.prompt_audio.shape[0]) if s.prompt_audio is not None else 0
            target = onsets = None
            if with_targets and self.config.layout.kind == "aligned" and s.speaks:
                target, onsets = self.aligned_target(s)
            elif with_targets:
                target = (
                    self._text_ids(s.target_text, f"target_text of a {s.task} sample")
                    if s.target_text is not None
                    else []
                )
            sample = s if with_targets else dataclasses.replace(s, target_speech=None)
            mix = None
            if s.task == "MIX" and with_targets:
                mix = [(self._text_ids(t, "a MIX text span"), sp) for t, sp in s.segments]
            seqs.append(
                layout_sample(
                    self.config.layout,
                    sample,
                    self._text_ids(s.prompt_text, "prompt_text"),
                    target if with_targets else None,
                    n_audio,
                    self.special,
                    D,
                    mix,
                    onsets,
                )
            )
            feats.append(s.prompt_audio)
        batch = collate(
            seqs, self.special["<pad>"], left_pad=left_pad, audio_features=feats, tasks=[s.task for s in samples]
        )
        if with_targets and self.ctc_blank is not None and any(s.prompt_transcript for s in samples):
            ids = [
                self._text_ids(s.prompt_transcript, "prompt_transcript") if s.prompt_transcript else [] for s in samples
            ]
            lengths = torch.tensor([len(i) for i in ids], dtype=torch.long)
            padded = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
            for row, i in enumerate(ids):
                padded[row, : len(i)] = torch.tensor(i, dtype=torch.long)
            batch = dataclasses.replace(batch, transcripts=padded, transcript_lengths=lengths)
        return batch

    # ------------------------------------------------------------------------------- embeddings
    def embed(self, text: torch.Tensor, state: torch.Tensor, speech: torch.Tensor) -> torch.Tensor:
        """Sum of stream embeddings: text ``(B, L)``, state ``(B, L)``, speech payloads ``(B, L, P)`` → ``(B, L, W)``.

        ``P`` is the speech head's ``payload_dim`` (a continuous token, or one code per level).
        """
        text_emb = self.backbone.get_input_embeddings()(text)
        gen = (state == STATE_GEN).unsqueeze(-1).to(text_emb.dtype)
        return text_emb + self.state_embed(state) + self.speech.embed(speech) * gen

    def embed_batch(
        self,
        batch: Batch,
        payloads: torch.Tensor | None = None,
        encoded: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Embeddings of a whole batch, with encoder outputs added at the ``audio_in`` positions.

        ``encoded`` is ``self.encoder``'s ``(B, N, W)`` output and ``(B,)`` lengths when the caller already
        has them (the CTC term reads them too).
        """
        if payloads is None:
            payloads = self.speech.payloads(batch.speech, batch.state)
        emb = self.embed(batch.text, batch.state, payloads)
        if batch.audio_features is None:
            return emb
        enc, enc_len = encoded if encoded is not None else self.encoder(batch.audio_features, batch.audio_lengths)
        valid = torch.arange(enc.shape[1], device=enc.device)[None, :] < enc_len[:, None]
        n_slots, n_enc = int(batch.audio_in.sum()), int(valid.sum())
        if n_slots != n_enc:
            raise FlowOmniError(f"layout has {n_slots} audio positions but the encoder produced {n_enc}")
        # Under autocast the encoder's output is bf16 while the embedding table's rows are float32.
        extra = torch.zeros_like(emb).index_put((batch.audio_in.nonzero(as_tuple=True)), enc[valid].to(emb.dtype))
        return emb + extra

    def condition(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None = None,
        position_ids=None,
        past=None,
        use_cache: bool = False,
    ):
        """Post-net over hidden states ``(B, L, W)`` → flow-head conditions ``(B, L, W)`` (and its cache)."""
        if self.postnet is None:
            return hidden, None
        out = self.postnet(
            inputs_embeds=hidden,
            attention_mask=mask,
            position_ids=position_ids,
            past_key_values=past,
            use_cache=use_cache,
        )
        return out.last_hidden_state, (out.past_key_values if use_cache else None)

    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.backbone.get_output_embeddings()(hidden)

    def ctc_loss(self, enc: torch.Tensor, enc_len: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, int]:
        """CTC of the encoder output ``(B, N, W)`` (lengths ``(B,)``) against the batch's transcripts; the
        mean over the items that have one (per item, the loss is divided by its transcript length), and
        how many they were. Alignments that cannot exist (a transcript longer than its audio) count 0."""
        has = batch.transcript_lengths > 0
        logits = torch.cat([self.text_logits(enc[has]), self.ctc_blank(enc[has])], dim=-1)
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (N, B', V + 1)
        loss = F.ctc_loss(
            log_probs,
            batch.transcripts[has],
            enc_len[has],
            batch.transcript_lengths[has],
            blank=logits.shape[-1] - 1,
            zero_infinity=True,
        )
        return loss, int(has.sum())

    # ---------------------------------------------------------------------------------- forward
    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> FlowOmniOutput:
        """Teacher-forced losses on a right-padded training batch."""
        batch = batch.to(self.device)
        pos = batch.position_ids
        # Per-item generators (when the batch carries seeds) make every random draw a function of
        # the sample alone: the same sample trains the same way in any batch, on any DDP rank, and
        # after a resume.
        item_gens = None
        if batch.seeds is not None:
            item_gens = [torch.Generator(device=self.device).manual_seed(int(s)) for s in batch.seeds]
        payloads = self.speech.payloads(batch.speech, batch.state)
        encoded = None if batch.audio_features is None else self.encoder(batch.audio_features, batch.audio_lengths)
        read = self.speech.perturb(payloads, batch.attention_mask.sum(1), item_gens, generator)
        emb = self.embed_batch(batch, read, encoded)
        hidden = self.backbone.base_model(
            inputs_embeds=emb, attention_mask=batch.attention_mask, position_ids=pos
        ).last_hidden_state
        text_t, state_t, speech_mask = batch.targets()
        has_text = text_t != IGNORE
        # The LM head is the largest matrix of a pretrained backbone: apply it only where it counts.
        text_loss = (
            F.cross_entropy(self.text_logits(hidden[has_text]), text_t[has_text])
            if has_text.any()
            else hidden.sum() * 0
        )
        has_state = state_t != IGNORE
        state_loss = (
            F.cross_entropy(self.state_head(hidden[has_state]), state_t[has_state])
            if has_state.any()
            else hidden.sum() * 0
        )
        if speech_mask.any():
            cond, _ = self.condition(hidden, batch.attention_mask, pos)
            nxt = torch.full_like(payloads, self.speech.pad_value)
            nxt[:, :-1] = payloads[:, 1:]
            prev = self.speech.training_previous(cond, payloads, speech_mask, item_gens, generator)
            rows = None if item_gens is None else list(zip(speech_mask.sum(1).tolist(), item_gens))
            flow_loss, code_loss = self.speech.loss_terms(
                cond[speech_mask], nxt[speech_mask], prev[speech_mask], item_rows=rows, generator=generator
            )
        else:
            flow_loss = hidden.sum() * 0
            code_loss = None if not self.speech.has_code_loss else flow_loss
        w = self.config.loss_weights
        loss = w.text * text_loss + w.state * state_loss + w.flow * flow_loss
        if code_loss is not None:
            loss = loss + w.code * code_loss
        ctc, num_ctc = None, 0
        if self.ctc_blank is not None and encoded is not None and batch.transcript_lengths is not None:
            if bool((batch.transcript_lengths > 0).any()):
                ctc, num_ctc = self.ctc_loss(*encoded, batch)
                loss = loss + w.ctc * ctc
        return FlowOmniOutput(
            loss,
            text_loss,
            state_loss,
            flow_loss,
            int(has_text.sum()),
            int(speech_mask.sum()),
            int(has_state.sum()),
            ctc,
            num_ctc,
            code_loss,
        )

    # ----------------------------------------------------------------------------- checkpoints
    def save_pretrained(
        self, directory: str | Path, *, training: TrainingRecord | None = None, metrics: Sequence[dict] | None = None
    ) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (+ ``tokenizer/`` for HF tokenizers) and the model card
        ``README.md`` (:mod:`flow_omni.model_card`), which also says how it was trained and what was measured
        on it when ``training`` and ``metrics`` are given."""
        directory = Path(directory)
        if isinstance(self.text_tokenizer, HFTokenizer):
            self.text_tokenizer.save(directory / "tokenizer")
        config = self.config.to_dict()
        save_checkpoint(directory, "FlowOmni", config, self.state_dict())
        write_model_card(directory, config, self.parameter_counts(), training, metrics)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> FlowOmni:
        """Rebuild a model saved by :meth:`save_pretrained`; foreign or damaged dirs raise CheckpointError."""
        directory = Path(directory)
        meta, state = load_checkpoint(directory, "FlowOmni")
        config = FlowOmniConfig.from_dict(meta["config"])
        tok_dir = directory / "tokenizer" if config.text_tokenizer.get("kind") == "hf" else None
        model = cls(config, _from_checkpoint=True, _tokenizer_dir=tok_dir)
        load_state_strict(model, _renamed_speech_keys(state), directory)
        return model.to(map_location).eval()

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part (``backbone``, ``encoder``, ``speech.output_head``, … as in the training groups)
        and in all (``total``); parts without parameters are left out."""
        parts = [(n, m) for n, m in self.named_children() if n != "speech"]
        parts += [(f"speech.{n}", m) for n, m in self.speech.named_children()]
        counts = {n: sum(p.numel() for p in m.parameters()) for n, m in parts}
        return {**{n: c for n, c in counts.items() if c}, "total": self.num_parameters()}

    # ------------------------------------------------------------------------------ generation
    def generate(self, samples, config=None, **overrides):
        """Generate for a list of prompts (:class:`~flow_omni.layout.Sample` without targets).

        ``config`` is a :class:`~flow_omni.models.generation.GenerationConfig` (or a mapping of its fields);
        keyword overrides are its fields, e.g. ``model.generate(prompts, solver="midpoint", steps=8, seed=3)``.
        """
        if isinstance(samples, (Sample, str)) or not isinstance(samples, Iterable):
            raise FlowOmniError(
                f"generate() takes a list of Samples, got a {type(samples).__name__}; for one: [sample]"
            )
        return generate(self, list(samples), GenerationConfig.of(config, **overrides))

    def stream(
        self,
        sample,
        config=None,
        *,
        vocoder=None,
        chunk_tokens: int = 4,
        audio_chunk_frames: int | None = AUDIO_CHUNK_FRAMES,
        **overrides,
    ):
        """Iterate over text / mel / audio :class:`~flow_omni.models.generation.StreamEvent` s for one prompt
        (``chunk_tokens``, ``audio_chunk_frames``: see :func:`~flow_omni.models.generation.stream`)."""
        return stream(
            self,
            sample,
            GenerationConfig.of(config, **overrides),
            vocoder=vocoder,
            chunk_tokens=chunk_tokens,
            audio_chunk_frames=audio_chunk_frames,
        )


#: Checkpoints written before the speech head had one interface named its parts differently.
_OLD_SPEECH_KEYS = (
    ("speech_in.", "speech.input_layer."),
    ("flow_head.", "speech.output_head."),
    ("codes.embeds.", "speech.input_layer.tables."),
    ("codes.head.", "speech.output_head."),
    ("codes.quantizer.", "speech.quantizer."),
)


def _renamed_speech_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with the speech stream's old parameter names mapped to the current ones."""
    out = {}
    for key, value in state.items():
        for old, new in _OLD_SPEECH_KEYS:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out
