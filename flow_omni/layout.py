"""Sequence layouts: how text, speech states and speech tokens share one LLM sequence.

Every position carries three parallel streams (docs/design.md, "The model in one paragraph"):

* ``text``  — a text token id (``<tpad>`` where there is no text),
* ``state`` — the speech state: ``PAD`` (no speech), ``START``, ``GEN`` (a speech token is here), ``STOP``,
* ``speech`` — a continuous speech token vector (zeros unless ``state == GEN``),

plus, in the prompt, positions whose embedding comes from the speech *encoder* (``audio_in``).
The input embedding is the sum of the embeddings of the streams. Position ``p`` predicts the
streams of position ``p + 1`` (text CE, state CE, and the flow head for the next speech token).

A sequence is ``prompt`` + ``response``. The prompt is ``<bos> <TASK> content <sep>`` where content is
text ids (T2A, T2T) or encoder positions (A2T, A2A). Three response layouts:

``parallel`` (Flow-Omni / Mini-Omni): text and speech run side by side, text leading by
``text_delay`` positions::

    j      : 0    1    2     3    4    …    d+N   d+N+1
    text   : t1   t2   t3    t4   …   tn <eot> <tpad> …       (text runs on, padded, while speech lasts)
    state  : PAD  PAD  START GEN  GEN  …    GEN   STOP        (d = text_delay = 2)
    speech : 0    0    0     s1   s2   …    sN    0

``aligned`` (Moshi's "inner monologue" with word timings): parallel streams as above, but each word's
text is placed where the word is spoken, ``text_delay + 1`` positions before the speech token in which
its speech begins, with ``<tpad>`` between words, and ``<eot>`` right after the last word. The text
at a position then names the word being spoken instead of lying seconds back in the sequence, so
the model need not learn an alignment by attention. It needs the targets' word onsets
(:attr:`Sample.target_alignment`); at generation the model writes ``<tpad>`` itself until the next
word is due::

    j      : 0      1  2  3  4  5      6      7  8  9  10  …
    text   : <tpad> a  n  n  a  <tpad> <tpad> ␣  r  a  n   …  <eot> <tpad> …
    state  : PAD    PAD  START  GEN …          (as in parallel; d = 2, so speech token k is at j = k + 3)

(the words "anna" and " ran" begin in speech tokens 1 and 7; a character tokenizer's ids.)

``interleaved`` (GLM-4-Voice): one position is either text or speech; chunks of ``text_chunk``
text tokens alternate with ``speech_chunk`` speech positions; when one stream runs out the other
continues alone; the speech stream ends with a ``STOP`` position right after its last token::

    text   : t1 … t13 <tpad>×26   t14 … <eot> <tpad> …  <tpad>
    state  : PAD …    GEN ×26     PAD …       GEN …      STOP

Text-only tasks (A2T, T2T) have the response ``t1 … tn <eot>`` with ``state = PAD`` throughout.

``MIX`` (GLM-4-Voice's interleaved text–speech pre-training data, made from text): a document cut
into spans, some given as text and some as speech. The prompt is ``<bos> <MIX> <sep>`` and the
response is the spans in order — a text span as text positions, a spoken span as
``START GEN×n STOP`` with ``<tpad>`` text — then ``<eot>``. The model learns to continue a
document in either modality. It is a training format; generation takes the four tasks above.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from flow_omni.config import Config
from flow_omni.errors import ConfigError, FlowOmniError

STATE_PAD, STATE_START, STATE_GEN, STATE_STOP = 0, 1, 2, 3
STATE_NAMES = ("pad", "start", "generating", "stop")
NUM_STATES = 4
IGNORE = -100

Task = Literal["A2T", "T2A", "A2A", "T2T", "MIX"]
TASKS: tuple[str, ...] = ("A2T", "T2A", "A2A", "T2T", "MIX")


@dataclasses.dataclass
class LayoutConfig(Config):
    kind: Literal["parallel", "interleaved", "aligned"] = "parallel"
    text_delay: int = 2
    text_chunk: int = 13
    speech_chunk: int = 26
    max_length: int = 2048
    #: extra speech positions after the last token of a run (set by discrete models with per-level
    #: delay: the deeper levels of the last token arrive this many positions later)
    speech_tail: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("parallel", "interleaved", "aligned"):
            raise ConfigError(f"LayoutConfig: kind must be parallel, interleaved or aligned, got {self.kind!r}")
        if self.text_delay < 0:
            raise ConfigError(f"LayoutConfig: text_delay must be >= 0, got {self.text_delay}")
        if self.text_chunk < 1 or self.speech_chunk < 1:
            raise ConfigError("LayoutConfig: text_chunk and speech_chunk must be >= 1")
        if self.speech_tail < 0:
            raise ConfigError(f"LayoutConfig: speech_tail must be >= 0, got {self.speech_tail}")
        if self.max_length < 8:
            raise ConfigError(f"LayoutConfig: max_length must be >= 8, got {self.max_length}")


def alignment_problem(words: Any, text: Any) -> str | None:
    """What is wrong with word onsets ``words`` of ``text`` (None when nothing is): they must be
    ``[character index, seconds]`` pairs, the indices increasing within the text, the times not
    decreasing from 0."""
    if not isinstance(words, list) or not words:
        return "must be a non-empty list of [character index, seconds] pairs"
    if not isinstance(text, str):
        return "describes a text the line does not have"
    last_char, last_time = -1, -1.0
    for w in words:
        ok = isinstance(w, (list, tuple)) and len(w) == 2 and isinstance(w[0], int) and not isinstance(w[0], bool)
        if not ok or not isinstance(w[1], (int, float)) or isinstance(w[1], bool) or not math.isfinite(w[1]):
            return f"must hold [character index, seconds] pairs of finite numbers, got {w!r}"
        if not (last_char < w[0] < len(text)) or w[1] < max(last_time, 0.0):
            return (
                f"must increase in both character index (within the text's {len(text)} characters) and "
                f"seconds (from 0), got {w!r} after [{last_char}, {last_time}]"
            )
        last_char, last_time = w[0], float(w[1])
    return None


@dataclass
class Sample:
    """One example. Prompt: ``prompt_text`` (T2A, T2T) or ``prompt_audio`` (A2T, A2A);
    targets (training only): ``target_text`` and, for T2A/A2A, ``target_speech``.

    ``prompt_audio`` holds *encoder input features* ``(n_frames, feat_dim)`` (the model's
    ``prepare_audio`` turns a waveform into these); ``target_speech`` is ``(N, token_dim)``.
    """

    task: str
    prompt_text: str | None = None
    prompt_audio: torch.Tensor | None = None
    target_text: str | None = None
    target_speech: torch.Tensor | None = None
    #: MIX only: the spans of the document, ``(text, speech tokens (n, D) or None)``
    segments: list[tuple[str, torch.Tensor | None]] | None = None
    #: with targets (training, teacher forcing), for the ``aligned`` layout: when each word of
    #: ``target_text`` begins in ``target_speech``, as ``(character index, seconds)`` pairs (the
    #: manifest's word onsets; :func:`alignment_problem` says what is allowed)
    target_alignment: Sequence[tuple[int, float]] | None = None
    #: training only: the words spoken in ``prompt_audio`` (A2T: the target; A2A: the question), the
    #: target of the auxiliary CTC loss on the speech encoder's output (``LossWeights.ctc``)
    prompt_transcript: str | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise FlowOmniError(f"unknown task {self.task!r}; expected one of {list(TASKS)}")
        for name in ("prompt_text", "target_text", "prompt_transcript"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise FlowOmniError(
                    f"Sample.{name} must be a string (or None), got a {type(value).__name__}: {value!r:.60}"
                )
        for name in ("prompt_audio", "target_speech"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, torch.Tensor):
                raise FlowOmniError(f"Sample.{name} must be a torch.Tensor (or None), got a {type(value).__name__}")
        if self.task == "MIX":
            if not self.segments:
                raise FlowOmniError("task MIX needs segments: a list of (text, speech tokens or None)")
            return
        if self.task[0] == "A" and self.prompt_audio is None:
            raise FlowOmniError(f"task {self.task} needs prompt_audio")
        if self.task[0] == "T":
            if self.prompt_text is None or not self.prompt_text.strip():
                raise FlowOmniError(f"task {self.task} needs a non-empty prompt_text")

    @property
    def speaks(self) -> bool:
        return self.task.endswith("A")


@dataclass
class Sequence3:
    """One laid-out sequence (unbatched): streams of length ``L``."""

    text: list[int]
    state: list[int]
    speech: torch.Tensor  # (L, D)
    audio_in: list[bool]  # positions fed by the speech encoder
    prompt_length: int


def build_prompt(
    sample: Sample, text_ids: Sequence[int], audio_positions: int, special: dict[str, int], token_dim: int
) -> Sequence3:
    """``<bos> <TASK> content <sep>``; content = text ids or ``audio_positions`` encoder slots."""
    tpad = special["<tpad>"]
    text = [special["<bos>"], special[f"<{sample.task}>"]]
    audio_in = [False, False]
    if sample.task == "MIX":
        pass  # no content: the whole document is the response
    elif sample.task[0] == "A":
        text += [tpad] * audio_positions
        audio_in += [True] * audio_positions
    else:
        text += list(text_ids)
        audio_in += [False] * len(text_ids)
    text.append(special["<sep>"])
    audio_in.append(False)
    n = len(text)
    return Sequence3(text, [STATE_PAD] * n, torch.zeros(n, token_dim), audio_in, n)


def build_response(
    cfg: LayoutConfig,
    task: str,
    text_ids: Sequence[int],
    speech: torch.Tensor | None,
    special: dict[str, int],
    token_dim: int,
    onsets: Sequence[tuple[int, int]] | None = None,
) -> tuple[list[int], list[int], torch.Tensor]:
    """The response streams ``(text, state, speech (R, D))`` for the layout in ``cfg``.

    ``onsets`` (the ``aligned`` layout's speech tasks): ``(index in text_ids, speech token index)`` of
    each word, the first at index 0: the word's ids run to the next word's index.
    """
    eot, tpad = special["<eot>"], special["<tpad>"]
    text_seq = list(text_ids) + [eot]
    if not task.endswith("A"):
        return text_seq, [STATE_PAD] * len(text_seq), torch.zeros(len(text_seq), token_dim)
    if speech is None or speech.dim() != 2 or speech.shape[0] == 0:
        raise FlowOmniError(f"task {task} needs target_speech of shape (N>0, {token_dim})")
    if cfg.speech_tail:
        speech = torch.cat([speech, speech.new_zeros(cfg.speech_tail, speech.shape[1])])
    n_speech = speech.shape[0]
    if cfg.kind in ("parallel", "aligned"):
        d = cfg.text_delay
        text = text_seq if cfg.kind == "parallel" else _aligned_text(text_ids, onsets, eot, tpad)
        length = max(len(text), d + n_speech + 2)
        text = text + [tpad] * (length - len(text))
        state = [STATE_PAD] * d + [STATE_START] + [STATE_GEN] * n_speech + [STATE_STOP]
        state += [STATE_PAD] * (length - len(state))
        vec = torch.zeros(length, token_dim)
        vec[d + 1 : d + 1 + n_speech] = speech
        return text, state, vec
    # interleaved: alternate chunks; a stream that runs out leaves the other to continue alone;
    # STOP follows the last speech token at once, so the generator can end speech mid-chunk.
    text, state, rows = [], [], []
    ti = si = 0
    zero = torch.zeros(token_dim)
    while ti < len(text_seq) or si <= n_speech:
        for _ in range(cfg.text_chunk):
            if ti >= len(text_seq):
                break
            text.append(text_seq[ti])
            state.append(STATE_PAD)
            rows.append(zero)
            ti += 1
        budget = cfg.speech_chunk if ti < len(text_seq) else n_speech + 1
        for _ in range(budget):
            if si > n_speech:
                break
            last = si == n_speech  # the position after the last token closes the run
            text.append(tpad)
            state.append(STATE_STOP if last else STATE_GEN)
            rows.append(zero if last else speech[si])
            si += 1
    return text, state, torch.stack(rows)


def aligned_positions(onsets: Sequence[tuple[int, int]] | None, n_ids: int) -> list[int]:
    """Where the ``aligned`` layout puts each word's first text id: at its speech token index, or right
    after the word before when that one runs late. ``onsets`` as in :func:`build_response`, over
    ``n_ids`` text ids."""
    if not onsets or onsets[0][0] != 0:
        raise FlowOmniError(
            "the aligned layout needs the target's word onsets, the first at text index 0 "
            "(Sample.target_alignment: (character index, seconds) pairs)"
        )
    positions, free = [], 0
    ends = [i for i, _ in onsets[1:]] + [n_ids]
    for (start, at), end in zip(onsets, ends):
        if not start < end <= n_ids:
            raise FlowOmniError(f"word onsets must increase within the {n_ids} text ids, got {list(onsets)}")
        positions.append(max(free, at))
        free = positions[-1] + end - start
    return positions


def _aligned_text(text_ids: Sequence[int], onsets: Sequence[tuple[int, int]] | None, eot: int, tpad: int) -> list[int]:
    """The ``aligned`` text stream: each word's ids at :func:`aligned_positions`, ``<tpad>`` between,
    ``<eot>`` after the last."""
    positions = aligned_positions(onsets, len(text_ids))
    ends = [i for i, _ in onsets[1:]] + [len(text_ids)]
    text: list[int] = []
    for (start, _), end, at in zip(onsets, ends, positions):
        text += [tpad] * (at - len(text)) + list(text_ids[start:end])
    return text + [eot]


def build_mix_response(
    segments: Sequence[tuple[Sequence[int], torch.Tensor | None]],
    special: dict[str, int],
    token_dim: int,
    speech_tail: int = 0,
) -> tuple[list[int], list[int], torch.Tensor]:
    """Response streams of a MIX sample: text spans as text, spoken spans as ``START GEN… STOP``."""
    tpad = special["<tpad>"]
    text, state, rows = [], [], []
    zero = torch.zeros(token_dim)
    for ids, speech in segments:
        if speech is None:
            text += list(ids)
            state += [STATE_PAD] * len(ids)
            rows += [zero] * len(ids)
            continue
        if speech.dim() != 2 or speech.shape[0] == 0 or speech.shape[1] != token_dim:
            raise FlowOmniError(f"a MIX speech span must be (N>0, {token_dim}) tokens, got {tuple(speech.shape)}")
        n = speech.shape[0] + speech_tail
        text += [tpad] * (n + 2)
        state += [STATE_START] + [STATE_GEN] * n + [STATE_STOP]
        rows += [zero] + list(speech) + [zero] * speech_tail + [zero]
    text.append(special["<eot>"])
    state.append(STATE_PAD)
    rows.append(zero)
    return text, state, torch.stack(rows)


def layout_sample(
    cfg: LayoutConfig,
    sample: Sample,
    prompt_text_ids: Sequence[int],
    target_text_ids: Sequence[int] | None,
    audio_positions: int,
    special: dict[str, int],
    token_dim: int,
    mix_segments: Sequence[tuple[Sequence[int], torch.Tensor | None]] | None = None,
    onsets: Sequence[tuple[int, int]] | None = None,
) -> Sequence3:
    """Prompt + (optional) response for one sample, checked against ``cfg.max_length``.

    ``mix_segments``: for a MIX sample, its spans with text already tokenised. ``onsets``: for a
    speech task in the ``aligned`` layout, where each word of the target begins (:func:`build_response`).
    """
    seq = build_prompt(sample, prompt_text_ids, audio_positions, special, token_dim)
    if sample.task == "MIX":
        if mix_segments is None:
            raise FlowOmniError("MIX is a training format (interleaved continuation); generation takes A2T/T2A/A2A/T2T")
        text, state, vec = build_mix_response(mix_segments, special, token_dim, cfg.speech_tail)
        seq = Sequence3(
            seq.text + text,
            seq.state + state,
            torch.cat([seq.speech, vec]),
            seq.audio_in + [False] * len(text),
            seq.prompt_length,
        )
    elif target_text_ids is not None or sample.target_speech is not None:
        text, state, vec = build_response(
            cfg, sample.task, target_text_ids or [], sample.target_speech, special, token_dim, onsets
        )
        seq = Sequence3(
            seq.text + text,
            seq.state + state,
            torch.cat([seq.speech, vec]),
            seq.audio_in + [False] * len(text),
            seq.prompt_length,
        )
    if len(seq.text) > cfg.max_length:
        raise FlowOmniError(
            f"a {sample.task} sequence needs {len(seq.text)} positions but max_length is {cfg.max_length} "
            f"(prompt {seq.prompt_length}); shorten the input or raise LayoutConfig.max_length"
        )
    return seq


@dataclass
class Batch:
    """Padded tensors for a batch of laid-out sequences (``B`` sequences, ``L`` positions)."""

    text: torch.Tensor  # (B, L) long
    state: torch.Tensor  # (B, L) long
    speech: torch.Tensor  # (B, L, D) float
    audio_in: torch.Tensor  # (B, L) bool
    attention_mask: torch.Tensor  # (B, L) long, 1 = real position
    prompt_lengths: torch.Tensor  # (B,) long
    audio_features: torch.Tensor | None = None  # (B, F, C) encoder input, padded
    audio_lengths: torch.Tensor | None = None  # (B,) frames of each item's encoder input
    tasks: list[str] = dataclasses.field(default_factory=list)
    seeds: torch.Tensor | None = None  # (B,) long: per-item seeds for the training noise (optional)
    # The prompt audio's transcripts as text ids, for the auxiliary CTC loss: (B, S) long, padded, and
    # (B,) long lengths (0 = the item has none). Only when the samples carry prompt_transcript.
    transcripts: torch.Tensor | None = None
    transcript_lengths: torch.Tensor | None = None

    def to(self, device) -> Batch:
        moved = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            moved[f.name] = v.to(device) if isinstance(v, torch.Tensor) else v
        return Batch(**moved)

    @property
    def position_ids(self) -> torch.Tensor:
        """Positions that skip padding, so left- and right-padded items see the same positions."""
        return (self.attention_mask.cumsum(-1) - 1).clamp_min(0)

    def targets(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Next-position targets ``(text (B,L), state (B,L), speech_mask (B,L))``; ignored = -100/False.

        Position ``p`` is trained to predict position ``p+1`` when ``p+1`` is in the response.
        """
        idx = torch.arange(self.text.shape[1], device=self.text.device)
        nxt_real = torch.zeros_like(self.attention_mask, dtype=torch.bool)
        nxt_real[:, :-1] = self.attention_mask[:, 1:].bool()
        # With right padding, p+1 is in the response when p+1 >= prompt_length.
        in_resp = (idx[None, :] + 1 >= self.prompt_lengths[:, None]) & nxt_real
        text_t = torch.full_like(self.text, IGNORE)
        state_t = torch.full_like(self.state, IGNORE)
        text_t[:, :-1] = self.text[:, 1:]
        state_t[:, :-1] = self.state[:, 1:]
        text_t[~in_resp] = IGNORE
        state_t[~in_resp] = IGNORE
        speech_mask = torch.zeros_like(in_resp)
        speech_mask[:, :-1] = self.state[:, 1:] == STATE_GEN
        speech_mask &= in_resp
        return text_t, state_t, speech_mask


def collate(
    seqs: Sequence[Sequence3],
    pad_id: int,
    *,
    left_pad: bool = False,
    audio_features: Sequence[torch.Tensor | None] | None = None,
    tasks: Sequence[str] = (),
) -> Batch:
    """Pad sequences to one length.

    Right padding for training (:meth:`Batch.targets` assumes it); left padding for generation, so
    that every item's next position is the same column of the KV cache.
    """
    if not seqs:
        raise FlowOmniError("cannot collate an empty batch")
    B, L = len(seqs), max(len(s.text) for s in seqs)
    D = seqs[0].speech.shape[1]
    text = torch.full((B, L), pad_id, dtype=torch.long)
    state = torch.full((B, L), STATE_PAD, dtype=torch.long)
    speech = torch.zeros(B, L, D)
    audio_in = torch.zeros(B, L, dtype=torch.bool)
    mask = torch.zeros(B, L, dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s.text)
        sl = slice(L - n, L) if left_pad else slice(0, n)
        text[i, sl] = torch.tensor(s.text)
        state[i, sl] = torch.tensor(s.state)
        speech[i, sl] = s.speech
        audio_in[i, sl] = torch.tensor(s.audio_in)
        mask[i, sl] = 1
    feats = lengths = None
    if audio_features is not None and any(f is not None for f in audio_features):
        present = [f for f in audio_features if f is not None]
        C = present[0].shape[-1]
        F_max = max(f.shape[0] for f in present)
        feats = torch.zeros(B, F_max, C)
        lengths = torch.zeros(B, dtype=torch.long)
        for i, f in enumerate(audio_features):
            if f is not None:
                feats[i, : f.shape[0]] = f
                lengths[i] = f.shape[0]
    prompt_lengths = torch.tensor([s.prompt_length for s in seqs], dtype=torch.long)
    return Batch(text, state, speech, audio_in, mask, prompt_lengths, feats, lengths, list(tasks))
