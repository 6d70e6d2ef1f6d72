"""Generation for :class:`~flow_omni.models.flow_omni.FlowOmni`: text and speech together.

One step appends one position to every sequence of the batch. From the last hidden state the
model picks the next text token (greedy, or sampled with temperature/top-k), the next speech state
(greedy, restricted to the transitions the layout allows), and, when that state is ``generating``,
the next continuous speech token from the flow head (ODE solver, steps, temperature, CFG scale per
call). An item ends by itself when its text has emitted ``<eot>`` and (for speaking tasks) its
state stream has emitted ``stop``; ``max_new_positions`` is the guard for items that never do.

Reproducibility: every item has its own ``torch.Generator`` (seed ``seed + i``), and random numbers
are drawn per item, so an item's output does not depend on what else is in the batch: batched
generation gives the same text and states as item-by-item generation with the matching seeds, and
speech tokens equal up to float32 rounding (~2e-4 after 30 steps in the tests: left padding changes
matmul shapes).

Everything runs through :func:`decode_steps`, a Python generator of per-step outputs, so the
streaming iterator (:func:`stream`) and :func:`generate` produce identical tokens.
"""

from __future__ import annotations

import dataclasses
import enum
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers.cache_utils import DynamicCache

from flow_omni.checks import check_number
from flow_omni.config import Config
from flow_omni.errors import ConfigError, FlowOmniError, UnknownCharactersWarning
from flow_omni.layout import STATE_GEN, STATE_PAD, STATE_START, STATE_STOP, Sample
from flow_omni.models.kv_cache import GrowingCache
from flow_omni.models.ode import SOLVERS
from flow_omni.text.tokenizer import unknown_characters_message
from flow_omni.vocoder.streaming import StreamingVocoder

# ``model`` below is a FlowOmni. It is annotated as nn.Module because flow_omni.models.flow_omni
# imports this module (generate and stream are its methods): naming the class here would close a cycle.

_NEG = float("-inf")
#: Item ``i`` of a batch draws from a generator seeded ``seed + i``; torch takes seeds below 2**64.
_SEED_LIMIT = 2**64
#: GenerationConfig.kv_cache → the cache class, built from the attention stack's config.
KV_CACHES = {"growing": GrowingCache, "dynamic": lambda config: DynamicCache(config=config)}


@dataclasses.dataclass
class GenerationConfig(Config):
    max_new_positions: int = 400
    text_temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = no top-k filtering
    # scale of the flow head's initial noise; also the softmax temperature of a code head (discrete
    # models, coarse_fine's code)
    speech_temperature: float = 1.0
    solver: str = "euler"
    steps: int = 10
    cfg_scale: float = 1.0
    compile: bool = False  # torch.compile the flow head's sampling trajectory (FlowHead.sample)
    use_cache: bool = True
    kv_cache: str = "growing"  # "growing": appends in place (GrowingCache); "dynamic": transformers' DynamicCache
    seed: int = 0
    batch_parallel: bool = False  # Mini-Omni: an A2T copy's text drives each A2A item

    def __post_init__(self) -> None:
        # A NaN temperature or a negative guidance scale would not fail: it would quietly make noise.
        for name in ("max_new_positions", "top_k", "steps", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"GenerationConfig.{name} must be an integer, got {value!r}")
        if self.max_new_positions < 1:
            raise ConfigError(f"GenerationConfig.max_new_positions must be >= 1, got {self.max_new_positions}")
        for name in ("text_temperature", "speech_temperature", "cfg_scale"):
            check_number(getattr(self, name), f"GenerationConfig.{name}", low=0.0)
        if self.top_k < 0:
            raise ConfigError(f"GenerationConfig.top_k must be >= 0 (0 = no top-k filtering), got {self.top_k}")
        if self.steps < 1:
            raise ConfigError(f"GenerationConfig.steps must be >= 1, got {self.steps}")
        if self.solver not in SOLVERS:
            raise ConfigError(f"GenerationConfig.solver {self.solver!r} is unknown; valid solvers are {list(SOLVERS)}")
        if self.kv_cache not in KV_CACHES:
            raise ConfigError(f"GenerationConfig.kv_cache {self.kv_cache!r} is unknown; valid: {list(KV_CACHES)}")
        if not 0 <= self.seed < _SEED_LIMIT:
            raise ConfigError(f"GenerationConfig.seed must be within [0, 2**64 - 1], got {self.seed}")

    @classmethod
    def of(cls, config: GenerationConfig | Mapping | None = None, **overrides) -> GenerationConfig:
        """The config a ``generate``/``stream`` call asked for: ``config`` (a GenerationConfig, a mapping
        of its fields, or None for the defaults) with the keyword ``overrides`` applied. Anything else, an
        unknown field or a value out of range raises :class:`ConfigError`."""
        if config is None:
            config = cls()
        elif isinstance(config, Mapping):
            config = cls.from_dict(dict(config))
        elif not isinstance(config, cls):
            raise ConfigError(
                f"config must be a GenerationConfig or a mapping of its fields, got {type(config).__name__}"
            )
        return config.replace(**overrides) if overrides else config


@dataclass
class Generated:
    """The result for one prompt."""

    task: str
    text: str
    text_ids: list[int]
    states: list[int]
    speech_tokens: torch.Tensor  # (N, token_dim), normalised
    mel: torch.Tensor | None  # (n_mels, N*r) raw log-mel, None for text-only tasks
    finished: bool  # ended by <eot>/stop rather than by max_new_positions
    positions: int


@dataclass
class Step:
    """What one decoding step produced for each of the ``B`` items."""

    text: torch.Tensor  # (B,) next text id (<tpad> where none)
    state: torch.Tensor  # (B,)
    speech: torch.Tensor  # (B, D) zeros where state != GEN
    new_text: torch.Tensor  # (B,) bool: a real text token was emitted
    active: torch.Tensor  # (B,) bool: item was still running when this step was made
    done: torch.Tensor  # (B,) bool: item has finished after this step


class Phase(enum.Enum):
    """Where an item's speech is: not started, speaking, or stopped for good."""

    BEFORE = 0
    SPEAKING = 1
    STOPPED = 2


class Mode(enum.Enum):
    """Interleaved layout only: which stream the current chunk of positions belongs to."""

    TEXT = "text"
    SPEECH = "speech"


@dataclass
class _Track:
    speaks: bool
    partner: int | None = None  # batch-parallel: index of the A2T copy whose text we take
    text_done: bool = False
    phase: Phase = Phase.BEFORE
    mode: Mode = Mode.TEXT
    count: int = 0  # positions of the current interleaved chunk so far
    done: bool = False


def _allowed_text_mask(model: nn.Module, vocab: int, device) -> torch.Tensor:
    allowed = torch.ones(vocab, dtype=torch.bool, device=device)
    for name, idx in model.special.items():
        if name != "<eot>" and idx < vocab:
            allowed[idx] = False
    return allowed


def _pick_text(logits: torch.Tensor, cfg: GenerationConfig, gen: torch.Generator) -> int:
    if cfg.text_temperature == 0:
        return int(logits.argmax())
    logits = logits / cfg.text_temperature
    if cfg.top_k > 0:
        kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1])).values[-1]
        logits = logits.masked_fill(logits < kth, _NEG)
    probs = torch.softmax(logits.float(), -1)
    return int(torch.multinomial(probs.cpu(), 1, generator=gen))


def _pick_state(logits: torch.Tensor, allowed: Sequence[int]) -> int:
    masked = torch.full_like(logits, _NEG)
    idx = torch.tensor(list(allowed), device=logits.device)
    masked[idx] = logits[idx]
    return int(masked.argmax())


def _expand_batch_parallel(samples: Sequence[Sample]) -> tuple[list[Sample], list[int | None]]:
    """Append an A2T copy for every A2A sample; return the samples and each item's partner index."""
    expanded, partners = list(samples), [None] * len(samples)
    for i, s in enumerate(samples):
        if s.task == "A2A":
            partners[i] = len(expanded)
            expanded.append(dataclasses.replace(s, task="A2T", target_text=None, target_speech=None))
            partners.append(None)
    return expanded, partners


@torch.no_grad()
def decode_steps(model: nn.Module, samples: Sequence[Sample], cfg: GenerationConfig) -> Iterator[Step]:
    """Yield one :class:`Step` per generated position until every item is done (or the guard)."""
    if not samples:
        raise FlowOmniError("generate() needs at least one prompt")
    for i, s in enumerate(samples):
        if not isinstance(s, Sample):
            raise FlowOmniError(
                f"prompt {i} is a {type(s).__name__}; expected a Sample, e.g. Sample('T2A', prompt_text=...)"
            )
    # One warning for the whole call, naming every character lost: Python shows each distinct one once.
    unknown = unknown_characters_message(model.text_tokenizer, "".join(s.prompt_text or "" for s in samples))
    if unknown:
        warnings.warn(f"prompt text: {unknown}", UnknownCharactersWarning, stacklevel=2)
    layout = model.config.layout
    partners: list[int | None] = [None] * len(samples)
    if cfg.batch_parallel:
        if layout.kind != "parallel":
            raise FlowOmniError("batch_parallel needs the parallel layout (text and speech side by side)")
        samples, partners = _expand_batch_parallel(samples)
    model.eval()
    device = model.device
    batch = model.collate(samples, left_pad=True, with_targets=False).to(device)
    B = len(samples)
    limit = getattr(model.backbone.config, "max_position_embeddings", None)
    if limit is not None and int(batch.attention_mask.sum(-1).max()) + cfg.max_new_positions > limit:
        raise FlowOmniError(
            f"prompt ({int(batch.attention_mask.sum(-1).max())} positions) + max_new_positions "
            f"({cfg.max_new_positions}) exceeds the backbone's {limit} positions"
        )
    gens = [torch.Generator().manual_seed((cfg.seed + i) % _SEED_LIMIT) for i in range(B)]
    tracks = [_Track(speaks=s.speaks, partner=partners[i]) for i, s in enumerate(samples)]
    sp = model.special
    head = model.speech
    P = head.payload_dim
    mask = batch.attention_mask
    pos = batch.position_ids
    base = model.backbone.base_model

    emb = model.embed_batch(batch)
    # The default growing caches write a step's keys and values in place; DynamicCache copies the cache to append.
    past = KV_CACHES[cfg.kv_cache](base.config) if cfg.use_cache else None
    out = base(inputs_embeds=emb, attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=cfg.use_cache)
    post_past = KV_CACHES[cfg.kv_cache](model.postnet.config) if cfg.use_cache and model.postnet is not None else None
    cond, post_past = model.condition(out.last_hidden_state, mask, pos, past=post_past, use_cache=cfg.use_cache)
    h, c = out.last_hidden_state[:, -1], cond[:, -1]
    cur_speech = torch.zeros(B, P, device=device)
    allowed_text = allowed_speaking = None
    aligned = layout.kind == "aligned"
    # Items that copy a partner's text go last, after the partner has picked its token.
    order = sorted(range(B), key=lambda i: tracks[i].partner is not None)
    speaking = torch.tensor([t.speaks for t in tracks], device=device)

    for _ in range(cfg.max_new_positions):
        logits = model.text_logits(h)
        if allowed_text is None:
            allowed_text = _allowed_text_mask(model, logits.shape[-1], device)
            allowed_speaking = allowed_text.clone()
            allowed_speaking[sp["<tpad>"]] = True
        if aligned:  # <tpad> between words while the speech lasts: in training none comes after STOP
            pads = speaking & torch.tensor([t.phase is not Phase.STOPPED for t in tracks], device=device)
            logits = logits.masked_fill(~torch.where(pads[:, None], allowed_speaking, allowed_text), _NEG)
        else:
            logits = logits.masked_fill(~allowed_text, _NEG)
        state_logits = model.state_head(h)
        nxt_text = torch.full((B,), sp["<tpad>"], dtype=torch.long)
        nxt_state = torch.full((B,), STATE_PAD, dtype=torch.long)
        new_text = torch.zeros(B, dtype=torch.bool)
        active = torch.tensor([not t.done for t in tracks])
        for i in order:
            t = tracks[i]
            if t.done:
                continue
            want_text = not t.text_done and (layout.kind != "interleaved" or not t.speaks or t.mode is Mode.TEXT)
            if want_text:
                if t.partner is not None:
                    # The partner (processed first) wrote its token; <tpad> means it has finished.
                    tok = int(nxt_text[t.partner])
                    if tok == sp["<tpad>"]:
                        tok = sp["<eot>"]
                else:
                    tok = _pick_text(logits[i], cfg, gens[i])
                nxt_text[i] = tok
                new_text[i] = tok not in (sp["<eot>"], sp["<tpad>"])
                t.text_done = tok == sp["<eot>"]
            if t.speaks:
                nxt_state[i] = _next_state(t, layout, state_logits[i], want_text)
        rows = (nxt_state == STATE_GEN).nonzero(as_tuple=True)[0].tolist()
        nxt_speech = torch.zeros(B, P, device=device)
        if rows:
            nxt_speech[rows] = head.sample(
                c[rows],
                cur_speech[rows],
                [gens[i] for i in rows],
                temperature=cfg.speech_temperature,
                steps=cfg.steps,
                solver=cfg.solver,
                cfg_scale=cfg.cfg_scale,
                compile=cfg.compile,
            )
        for i, t in enumerate(tracks):
            if not t.done:
                t.done = t.text_done and (not t.speaks or t.phase is Phase.STOPPED)
        done = torch.tensor([t.done for t in tracks])
        yield Step(nxt_text, nxt_state, nxt_speech.cpu(), new_text, active, done)
        if bool(done.all()):
            return
        cur_speech = nxt_speech
        new_emb = model.embed(nxt_text[:, None].to(device), nxt_state[:, None].to(device), nxt_speech[:, None])
        mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=device)], 1)
        new_pos = pos[:, -1:] + 1
        pos = torch.cat([pos, new_pos], 1)
        if cfg.use_cache:
            out = base(
                inputs_embeds=new_emb, attention_mask=mask, position_ids=new_pos, past_key_values=past, use_cache=True
            )
            past = out.past_key_values
            cond, post_past = model.condition(out.last_hidden_state, mask, new_pos, past=post_past, use_cache=True)
        else:
            emb = torch.cat([emb, new_emb], 1)
            out = base(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=False)
            cond, _ = model.condition(out.last_hidden_state, mask, pos)
        h, c = out.last_hidden_state[:, -1], cond[:, -1]


def _next_state(t: _Track, layout, logits: torch.Tensor, wrote_text: bool) -> int:
    """Greedy state restricted to legal transitions; updates the track's phase/mode."""
    if layout.kind != "interleaved":
        allowed = {
            Phase.BEFORE: (STATE_PAD, STATE_START),
            Phase.SPEAKING: (STATE_GEN, STATE_STOP),
            Phase.STOPPED: (STATE_PAD,),
        }[t.phase]
        s = _pick_state(logits, allowed)
        if s == STATE_START:
            t.phase = Phase.SPEAKING
        elif s == STATE_STOP:
            t.phase = Phase.STOPPED
        return s
    # interleaved: text chunks and speech chunks alternate on a fixed schedule.
    if t.mode is Mode.TEXT:
        if wrote_text:
            t.count += 1
        if t.phase is not Phase.STOPPED and (t.text_done or t.count >= layout.text_chunk):
            t.mode, t.count = Mode.SPEECH, 0
        return STATE_PAD
    s = _pick_state(logits, (STATE_GEN, STATE_STOP))
    if s == STATE_STOP:
        t.phase = Phase.STOPPED
        t.mode, t.count = Mode.TEXT, 0
    else:
        t.count += 1
        if not t.text_done and t.count >= layout.speech_chunk:
            t.mode, t.count = Mode.TEXT, 0
    return s


def generate(model: nn.Module, samples: Sequence[Sample], cfg: GenerationConfig | None = None) -> list[Generated]:
    """Run :func:`decode_steps` to the end and assemble one :class:`Generated` per prompt."""
    cfg = GenerationConfig.of(cfg)
    n_out = len(samples)
    text_ids: list[list[int]] = [[] for _ in range(n_out)]
    states: list[list[int]] = [[] for _ in range(n_out)]
    speech: list[list[torch.Tensor]] = [[] for _ in range(n_out)]
    finished = [False] * n_out
    positions = [0] * n_out
    for step in decode_steps(model, samples, cfg):
        for i in range(n_out):
            if not bool(step.active[i]):
                continue
            positions[i] += 1
            states[i].append(int(step.state[i]))
            if bool(step.new_text[i]):
                text_ids[i].append(int(step.text[i]))
            if int(step.state[i]) == STATE_GEN:
                speech[i].append(step.speech[i])
            finished[i] = bool(step.done[i])
    results = []
    D = model.config.speech.token_dim
    for i, s in enumerate(samples):
        tokens = model.speech.to_tokens(torch.stack(speech[i])) if speech[i] else torch.zeros(0, D)
        mel = model.speech_tokenizer.decode(tokens) if s.speaks and tokens.shape[0] else None
        results.append(
            Generated(
                s.task,
                model.text_tokenizer.decode(text_ids[i]),
                text_ids[i],
                states[i],
                tokens,
                mel,
                finished[i],
                positions[i],
            )
        )
    return results


@dataclass
class StreamEvent:
    """One piece of streamed output: ``kind`` is "text", "mel" or "audio"."""

    kind: str
    text: str | None = None
    mel: torch.Tensor | None = None  # (n_mels, frames)
    audio: torch.Tensor | None = None  # (samples,)
    tokens: torch.Tensor | None = None  # (n, token_dim) for "mel" events


#: Default cap of the streaming vocoder's chunk schedule (frames): large enough that the context
#: re-decoded around each chunk is a small share of the work, small enough to bound its memory.
AUDIO_CHUNK_FRAMES = 128


def stream(
    model: nn.Module,
    sample: Sample,
    cfg: GenerationConfig | None = None,
    *,
    vocoder=None,
    chunk_tokens: int = 4,
    audio_chunk_frames: int | None = AUDIO_CHUNK_FRAMES,
) -> Iterator[StreamEvent]:
    """Yield text pieces, mel chunks (every ``chunk_tokens`` speech tokens) and, with a vocoder,
    audio chunks as they are produced. Concatenating the "mel" events gives :attr:`Generated.mel`;
    concatenating the "audio" events equals ``vocoder.decode`` of that mel (float rounding apart).

    Every speech token goes to the :class:`StreamingVocoder` as soon as it is complete, whatever
    ``chunk_tokens`` is: the first audio leaves once its vocoder look-ahead has arrived, and later
    audio chunks double in size up to ``audio_chunk_frames`` mel frames, so that the vocoder context
    re-decoded around each chunk stays a small share of the work. ``audio_chunk_frames=1`` emits
    every frame as soon as it is final (most vocoder work); ``None`` likewise.
    """
    cfg = GenerationConfig.of(cfg)
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    if audio_chunk_frames is not None and audio_chunk_frames < 1:
        raise ValueError(f"audio_chunk_frames must be >= 1 or None, got {audio_chunk_frames}")
    streamer = None
    if vocoder is not None:
        streamer = StreamingVocoder(vocoder, min_new_frames=1, max_new_frames=audio_chunk_frames)
    ids: list[int] = []
    said = ""
    pending: list[torch.Tensor] = []  # complete tokens not yet sent as a "mel" event
    pending_mel: list[torch.Tensor] = []  # their mel, (n_mels, r) each
    payloads: list[torch.Tensor] = []  # the newest payloads, enough to complete a token
    keep = model.speech.tail + 1

    def flush_mel(final: bool) -> Iterator[StreamEvent]:
        nonlocal pending, pending_mel
        if pending and (final or len(pending) >= chunk_tokens):
            # The tokenizer's decode is elementwise per frame, so per-token mels concatenate to the
            # chunk's mel exactly.
            yield StreamEvent("mel", mel=torch.cat(pending_mel, dim=-1), tokens=torch.stack(pending))
            pending, pending_mel = [], []

    for step in decode_steps(model, [sample], cfg):
        if bool(step.new_text[0]):
            ids.append(int(step.text[0]))
            text = model.text_tokenizer.decode(ids)
            if len(text) > len(said):
                yield StreamEvent("text", text=text[len(said) :])
                said = text
        if int(step.state[0]) == STATE_GEN:
            # A token is complete once its deepest (most delayed) level has arrived. Only the
            # newest token can have completed: decode the last tail + 1 payloads.
            payloads = (payloads + [step.speech[0]])[-keep:]
            new = model.speech.to_tokens(torch.stack(payloads))
            if len(new):
                mel = model.speech_tokenizer.decode(new)
                pending.extend(new)
                pending_mel.append(mel)
                yield from flush_mel(False)
                if streamer is not None:
                    audio = streamer.push(mel)
                    if audio.numel():
                        yield StreamEvent("audio", audio=audio)
    yield from flush_mel(True)
    if streamer is not None:
        tail = streamer.flush()
        if tail.numel():
            yield StreamEvent("audio", audio=tail)
