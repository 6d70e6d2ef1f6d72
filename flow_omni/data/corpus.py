"""Build a synthetic speech corpus offline: sentences, spoken QA and interleaved documents.

``build_corpus(config, out_dir)`` speaks built-in text (:mod:`flow_omni.data.texts`) with espeak-ng
(:mod:`flow_omni.data.espeak`) in many voices and writes::

    out_dir/corpus.json                the CorpusConfig (CorpusConfig.load reads it back)
    out_dir/wavs/*.wav                 16-bit PCM mono at config.sample_rate
    out_dir/wavs/words.jsonl           when each word of each WAV begins (espeak's word events)
    out_dir/train.jsonl                manifests (flow_omni.data.manifest schema) ...
    out_dir/valid.jsonl
    out_dir/test.jsonl                 ... these three in the training voices,
    out_dir/test_unseen_voices.jsonl   this one only in held-out voices, which train never uses

Three kinds of entries (``meta["kind"]``):

* ``sentence``: one sentence in one voice (ASR / TTS pairs).
* ``qa``: a question in one of the voices, its answer (``answer_text``/``answer_audio``) always in
  the single ``answer_voice``, as in Flow-Omni's dialogue data (many voices ask, one answers).
  ``meta["category"]`` is the QA category. Equal answers share one WAV (same text, voice, rate
  and pitch give the same audio).
* ``interleaved``: a GLM-4-Voice-style document made from text: the document is cut into word
  spans of random length; every other span is also given as speech (its own WAV) in
  ``segments``; the entry's ``audio`` is the whole document spoken.

One output voice (``one_output_voice``, on by default): whatever a model is trained to *say* is
in the ``answer_voice`` at ``answer_rate``/``answer_pitch``/``answer_intonation``, as in
Flow-Omni, Mini-Omni and LLaMA-Omni, which all speak in one voice. So every entry's ``text`` is
also spoken in that voice (``target_audio``, ``target_duration``, ``meta["target_speaker"]``;
the T2A target), and the spoken spans of ``segments`` (MIX targets: the whole document is the
response there, so the first spoken span had no voice to go by) are spoken in it instead of the
document's voice. ``audio`` (A2T input, A2A question) keeps its many voices. Equal texts in the
answer voice share one WAV, answers included. Turned off, the corpus is the many-voice one of
before (same WAVs and manifests for a seed): a T2A target is then the sentence in a random voice.

Word timings: every WAV's word onsets, ``[[character index, seconds], …]`` (the index in its text
where a spoken word starts, and when its speech starts), are recorded from espeak's word events and
written to the manifests next to the audio they describe (``alignment``, ``answer_alignment``,
``target_alignment``); the ``aligned`` layout places text by them. ``wavs/words.jsonl`` keeps them
across an interrupted build; a WAV it does not cover (one from a build before it) is spoken again
for its timings, which gives the same audio.

Length: an entry whose audio, answer or target is longer than training's default limit
(:data:`~flow_omni.data.dataset.MAX_SECONDS`, ``DataConfig.max_seconds``) is left out of the
manifests and named in the report; training would skip it. Only long interleaved documents reach it.

Reproducibility: the whole plan (texts, voices, rates, pitches, splits, file names) is drawn
from ``config.seed`` before anything is spoken, and espeak synthesis is a pure function of its
arguments, so the same config gives byte-identical files however often the build is interrupted
and resumed. Each WAV is written atomically, so a file that exists is complete; a rerun with the
same config reuses them, and manifests are written only once every WAV exists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from tqdm.auto import tqdm

from flow_omni.audio.io import TARGET_SAMPLE_RATE
from flow_omni.checkpoint import atomic_write, atomic_write_text
from flow_omni.checks import check_output_folder
from flow_omni.config import Config
from flow_omni.data.dataset import MAX_SECONDS
from flow_omni.data.espeak import (
    DEFAULT_MARGIN_SECONDS,
    ENGLISH_LANGUAGES,
    ENGLISH_VARIANTS,
    PITCH_RANGE,
    RATE_RANGE,
    Espeak,
    VoiceSpec,
    default_voices,
    get_espeak,
)
from flow_omni.data.manifest import ManifestEntry, Segment, write_manifest
from flow_omni.data.texts import QA_CATEGORIES, generate_document, generate_qa, generate_sentences
from flow_omni.errors import ConfigError, FlowOmniError

CONFIG_NAME = "corpus.json"
WAV_DIR = "wavs"
SPLITS = ("train", "valid", "test", "test_unseen_voices")
KINDS = ("sentence", "qa", "interleaved")

#: Variants held out entirely: no training voice uses them, in any accent (unseen speakers).
HELDOUT_VARIANTS = ("m7", "f5", "klatt4")
HELDOUT_VOICES = ("en-us+m7", "en+f5", "en-gb-x-rp+klatt4", "en-us+f5", "en-gb-x-gbclan+m7")
#: The one voice that speaks every answer (clearest variant in the ASR check, WER 0.22).
ANSWER_VOICE = "en-us+m5"
#: Question/sentence voices: every accent x non-held-out variant, minus the answer voice (59).
TRAIN_VOICES = tuple(
    v
    for v in default_voices(ENGLISH_LANGUAGES, [x for x in ENGLISH_VARIANTS if x not in HELDOUT_VARIANTS])
    if v != ANSWER_VOICE
)


class CorpusError(FlowOmniError, ValueError):
    """The output folder holds a different corpus, or a corpus file is damaged."""


def _check_range(name: str, value: Any, lo: float, hi: float) -> None:
    if len(value) != 2 or not lo <= value[0] <= value[1] <= hi:
        raise ConfigError(
            f"CorpusConfig.{name}: expected [min, max] with {lo} <= min <= max <= {hi}, got {list(value)}"
        )


@dataclass
class CorpusConfig(Config):
    """What to speak, in which voices, and how to split it. Stored as ``corpus.json``.

    ``rate_range``, ``pitch_range`` and ``intonation_range`` are inclusive ``[min, max]`` ranges
    from which each utterance draws espeak's rate (words per minute), base pitch (0–99) and pitch
    range / intonation (0–99). The answer voice always speaks at ``answer_rate``,
    ``answer_pitch``, ``answer_intonation``; with ``one_output_voice`` it also speaks every speech
    target (see the module docstring). ``unseen_fraction`` of every kind goes to
    ``test_unseen_voices`` (spoken by ``heldout_voices``); of the rest, ``valid_fraction`` and
    ``test_fraction`` (of the kind's total) go to valid and test; counts are rounded half up.
    """

    seed: int = 0
    n_sentences: int = 400
    n_qa: int = 200
    n_interleaved: int = 40
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    unseen_fraction: float = 0.1
    voices: list[str] = field(default_factory=lambda: list(TRAIN_VOICES))
    heldout_voices: list[str] = field(default_factory=lambda: list(HELDOUT_VOICES))
    rate_range: tuple[int, int] = (145, 205)
    pitch_range: tuple[int, int] = (30, 70)
    intonation_range: tuple[int, int] = (30, 70)
    answer_voice: str = ANSWER_VOICE
    answer_rate: int = 175
    answer_pitch: int = 50
    answer_intonation: int = 50
    #: also speak every entry's text, and the spoken spans of interleaved documents, in the answer
    #: voice, and make those the speech targets (``target_audio``): one output voice
    one_output_voice: bool = True
    qa_categories: list[str] = field(default_factory=lambda: list(QA_CATEGORIES))
    doc_sentences: tuple[int, int] = (3, 5)
    span_words: tuple[int, int] = (3, 10)
    margin_seconds: float = DEFAULT_MARGIN_SECONDS
    sample_rate: int = TARGET_SAMPLE_RATE

    def __post_init__(self) -> None:
        for name in ("n_sentences", "n_qa", "n_interleaved"):
            if getattr(self, name) < 0:
                raise ConfigError(f"CorpusConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("valid_fraction", "test_fraction", "unseen_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"CorpusConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.valid_fraction + self.test_fraction + self.unseen_fraction >= 1.0:
            raise ConfigError(
                "CorpusConfig: valid_fraction + test_fraction + unseen_fraction must be < 1 so that "
                f"something is left for train, got {self.valid_fraction} + {self.test_fraction} "
                f"+ {self.unseen_fraction}"
            )
        if not self.voices:
            raise ConfigError("CorpusConfig.voices is empty; expected voice specs like 'en-us+f3'")
        if self.unseen_fraction > 0 and not self.heldout_voices:
            raise ConfigError(
                "CorpusConfig.heldout_voices is empty but unseen_fraction > 0; give held-out voices or set it to 0"
            )
        seen = {str(VoiceSpec.parse(v)) for v in self.voices}
        overlap = sorted(seen & {str(VoiceSpec.parse(v)) for v in self.heldout_voices})
        if overlap:
            raise ConfigError(
                f"CorpusConfig: voices {overlap} are both training and held-out voices; held-out voices must be unseen"
            )
        if str(VoiceSpec.parse(self.answer_voice)) in {str(VoiceSpec.parse(v)) for v in self.heldout_voices}:
            raise ConfigError(
                f"CorpusConfig.answer_voice {self.answer_voice!r} is a held-out voice; held-out voices must stay unseen"
            )
        _check_range("rate_range", self.rate_range, *RATE_RANGE)
        _check_range("pitch_range", self.pitch_range, *PITCH_RANGE)
        _check_range("intonation_range", self.intonation_range, *PITCH_RANGE)
        _check_range("span_words", self.span_words, 1, 10_000)
        _check_range("doc_sentences", self.doc_sentences, 1, 1_000)
        answer_limits = (("answer_rate", RATE_RANGE), ("answer_pitch", PITCH_RANGE), ("answer_intonation", PITCH_RANGE))
        for name, (lo, hi) in answer_limits:
            if not lo <= getattr(self, name) <= hi:
                raise ConfigError(f"CorpusConfig.{name} must be in [{lo}, {hi}], got {getattr(self, name)}")
        unknown = [c for c in self.qa_categories if c not in QA_CATEGORIES]
        if unknown or not self.qa_categories:
            raise ConfigError(
                f"CorpusConfig.qa_categories: expected a non-empty subset of {list(QA_CATEGORIES)}, "
                f"got {self.qa_categories}"
            )
        if self.sample_rate <= 0 or self.margin_seconds < 0:
            raise ConfigError(
                "CorpusConfig: sample_rate must be > 0 and margin_seconds >= 0, "
                f"got {self.sample_rate}, {self.margin_seconds}"
            )


# ---- the plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    """One WAV to make: ``wavs/<uid>.wav`` is ``text`` spoken with these espeak settings."""

    uid: str
    text: str
    voice: str
    rate: int
    pitch: int
    intonation: int

    @property
    def path(self) -> str:
        return f"{WAV_DIR}/{self.uid}.wav"


@dataclass
class PlannedEntry:
    """A manifest line before its audio exists."""

    id: str
    split: str
    kind: str
    main: Utterance
    answer: Utterance | None = None
    target: Utterance | None = None  # ``main.text`` in the output voice
    segments: list[tuple[str, Utterance | None]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class CorpusPlan:
    entries: list[PlannedEntry]
    utterances: list[Utterance]  # unique, in synthesis order


def _split_labels(n: int, config: CorpusConfig, rng: random.Random) -> list[str]:
    """Split label per item: exact counts (rounded half up), positions shuffled by ``rng``."""

    def count(frac: float) -> int:
        return int(n * frac + 0.5)

    n_unseen, n_test, n_valid = count(config.unseen_fraction), count(config.test_fraction), count(config.valid_fraction)
    n_unseen = min(n_unseen, n)
    n_test = min(n_test, n - n_unseen)
    n_valid = min(n_valid, n - n_unseen - n_test)
    labels = ["test_unseen_voices"] * n_unseen + ["test"] * n_test + ["valid"] * n_valid
    labels += ["train"] * (n - len(labels))
    rng.shuffle(labels)
    return labels


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


def make_plan(config: CorpusConfig) -> CorpusPlan:
    """Draw every text, voice, rate, pitch and split from ``config.seed`` (no audio is made).

    Each kind uses its own random streams (seeded with strings such as ``"7/qa/voices"``), so
    e.g. changing ``n_qa`` leaves the sentences unchanged. The output-voice renderings
    (``one_output_voice``) draw nothing: turning them on or off moves no text, voice or split.
    """

    def stream(kind: str, what: str) -> random.Random:
        return random.Random(f"{config.seed}/{kind}/{what}")

    def voicing(rng: random.Random, split: str) -> dict[str, Any]:
        pool = config.heldout_voices if split == "test_unseen_voices" else config.voices
        return {
            "voice": str(VoiceSpec.parse(rng.choice(pool))),
            "rate": rng.randint(*config.rate_range),
            "pitch": rng.randint(*config.pitch_range),
            "intonation": rng.randint(*config.intonation_range),
        }

    entries: list[PlannedEntry] = []

    texts = generate_sentences(config.n_sentences, stream("sentence", "text"))
    labels = _split_labels(len(texts), config, stream("sentence", "split"))
    vrng = stream("sentence", "voices")
    for i, (text, split) in enumerate(zip(texts, labels)):
        uid = f"sent-{i:06d}"
        v = voicing(vrng, split)
        entries.append(PlannedEntry(uid, split, "sentence", Utterance(uid, text, **v)))

    items = generate_qa(config.n_qa, stream("qa", "text"), config.qa_categories)
    labels = _split_labels(len(items), config, stream("qa", "split"))
    vrng = stream("qa", "voices")
    answer_voice = str(VoiceSpec.parse(config.answer_voice))
    answers: dict[str, Utterance] = {}
    answer_names: set[str] = set()
    for i, (item, split) in enumerate(zip(items, labels)):
        uid = f"qa-{i:06d}"
        v = voicing(vrng, split)
        if item.answer not in answers:
            name, k = f"answer-{_slug(item.answer)}", 1
            while name in answer_names:  # two answers that differ only in punctuation
                k += 1
                name = f"answer-{_slug(item.answer)}-{k}"
            answer_names.add(name)
            answers[item.answer] = Utterance(
                name, item.answer, answer_voice,
                config.answer_rate, config.answer_pitch, config.answer_intonation,
            )  # fmt: skip
        entries.append(
            PlannedEntry(uid, split, "qa", Utterance(uid, item.question, **v), answer=answers[item.answer],
                         meta={"category": item.category})
        )  # fmt: skip

    drng = stream("interleaved", "text")
    labels = _split_labels(config.n_interleaved, config, stream("interleaved", "split"))
    vrng = stream("interleaved", "voices")
    for i, split in enumerate(labels):
        uid = f"doc-{i:06d}"
        doc = generate_document(drng, drng.randint(*config.doc_sentences))
        words = doc.split()
        spoken = drng.random() < 0.5
        first = "speech" if spoken else "text"
        v = voicing(vrng, split)
        segments: list[tuple[str, Utterance | None]] = []
        pos = 0
        while pos < len(words):
            n = drng.randint(*config.span_words)
            span = " ".join(words[pos : pos + n])
            pos += n
            segments.append((span, Utterance(f"{uid}-s{len(segments):02d}", span, **v) if spoken else None))
            spoken = not spoken
        entries.append(PlannedEntry(uid, split, "interleaved", Utterance(uid, doc, **v), segments=segments,
                                    meta={"first": first}))  # fmt: skip

    if config.one_output_voice:
        # Equal texts share one WAV; an answer keeps its name, other texts are named after the
        # first entry (or span) that says them, with "-target" so that no file name of the
        # many-voice corpus is reused for other audio (an old corpus folder can be resumed).
        spoken = {u.text: u for u in answers.values()}

        def in_output_voice(u: Utterance) -> Utterance:
            return spoken.setdefault(u.text, Utterance(
                f"{u.uid}-target", u.text, answer_voice,
                config.answer_rate, config.answer_pitch, config.answer_intonation,
            ))  # fmt: skip

        for e in entries:
            e.target = in_output_voice(e.main)
            if e.segments is not None:
                e.segments = [(text, None if u is None else in_output_voice(u)) for text, u in e.segments]

    utterances: dict[str, Utterance] = {}  # file names are unique by construction
    for e in entries:
        for u in [e.main, e.answer, e.target] + [u for _, u in e.segments or []]:
            if u is not None:
                utterances.setdefault(u.uid, u)
    return CorpusPlan(entries, list(utterances.values()))


# ---- the report ------------------------------------------------------------------------------


@dataclass
class CorpusReport:
    """What a :func:`build_corpus` call did. ``throughput`` = new audio seconds per wall second."""

    out_dir: Path
    complete: bool
    counts: dict[str, dict[str, int]]  # split -> kind -> entries
    n_utterances: int  # WAV files in the plan
    synthesized: int  # WAVs made by this call
    reused: int  # WAVs found from an earlier (interrupted) call
    audio_seconds: float  # all WAVs present
    synthesized_seconds: float  # WAVs made by this call
    wall_seconds: float
    #: ids of the entries left out of the manifests for being longer than training's limit (MAX_SECONDS)
    too_long: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.synthesized_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["out_dir"] = str(self.out_dir)
        out["throughput"] = self.throughput
        return out

    def __str__(self) -> str:
        done = self.synthesized + self.reused
        state = "complete" if self.complete else f"INCOMPLETE ({done}/{self.n_utterances} WAVs; run again to resume)"
        splits = ", ".join(f"{s} {sum(k.values())}" for s, k in self.counts.items())
        kinds = ", ".join(f"{k} {sum(c.get(k, 0) for c in self.counts.values())}" for k in KINDS)
        dropped = ""
        if self.too_long:
            n = len(self.too_long)
            shown = ", ".join(self.too_long[:5]) + (", ..." if n > 5 else "")
            dropped = (
                f"\n  left out {n} {'entry' if n == 1 else 'entries'} longer than training's {MAX_SECONDS:g} s "
                f"limit (DataConfig.max_seconds): {shown}"
            )
        return (
            f"corpus {self.out_dir}: {state}\n"
            f"  entries: {splits} ({kinds})\n"
            f"  {self.n_utterances} WAVs, {self.audio_seconds / 60:.1f} min of audio; "
            f"{self.synthesized} synthesised, {self.reused} reused\n"
            f"  {self.wall_seconds:.1f} s wall, {self.throughput:.0f} s of audio per second" + dropped
        )


# ---- building --------------------------------------------------------------------------------


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    # Quantise here (round, clip) rather than in libsndfile, so the bytes do not depend on its settings.
    pcm = np.clip(np.round(audio.astype(np.float64) * 32767.0), -32768, 32767).astype(np.int16)
    atomic_write(path, lambda tmp: sf.write(str(tmp), pcm, sample_rate, subtype="PCM_16", format="WAV"))


@contextlib.contextmanager
def _one_torch_thread():
    """Run with one intra-op torch thread, then restore the previous count.

    Each resampling call works on a few seconds of audio; splitting that over threads costs more
    than it saves (measured on the 2-core reference machine under load: 2 ms per 3 s clip on one
    thread, 16 ms on two), and the build is a serial loop anyway.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _existing_frames(path: Path, sample_rate: int) -> int:
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise CorpusError(
            f"{path} exists but is not readable audio ({exc}); delete it and rerun to resynthesise it"
        ) from None
    if info.samplerate != sample_rate or info.channels != 1:
        raise CorpusError(
            f"{path} is {info.channels} channel(s) at {info.samplerate} Hz; "
            f"this corpus expects mono at {sample_rate} Hz. "
            "Delete it (or use overwrite=True) to resynthesise"
        )
    return int(info.frames)


def _prepare_dir(out_dir: Path, config: CorpusConfig, overwrite: bool) -> None:
    cfg_path = out_dir / CONFIG_NAME
    ours = [cfg_path, out_dir / WAV_DIR] + [out_dir / f"{s}.jsonl" for s in SPLITS]
    if overwrite:
        for p in ours:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    if cfg_path.exists():
        try:
            stored = CorpusConfig.load(cfg_path)
        except ConfigError as exc:
            raise CorpusError(
                f"{cfg_path} is not a corpus config this version can read ({exc}); "
                "build into a new folder, or pass overwrite=True (--overwrite) to replace it"
            ) from None
        if stored.to_dict() != config.to_dict():
            a, b = stored.to_dict(), config.to_dict()
            diff = ", ".join(f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k])
            raise CorpusError(
                f"{out_dir} already holds a corpus built with a different config ({diff[:400]}); "
                "build into a new folder, or pass overwrite=True (--overwrite) to replace it"
            )
    else:
        leftovers = [p.name for p in ours[1:] if p.exists() and (p.is_file() or any(p.iterdir()))]
        if leftovers:
            raise CorpusError(
                f"{out_dir} has corpus files {leftovers} but no {CONFIG_NAME}, so they cannot be checked against the "
                "config; build into a new folder, or pass overwrite=True (--overwrite) to replace them"
            )
    (out_dir / WAV_DIR).mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / WAV_DIR).glob(".*.tmp"):  # left by a killed atomic_write
        stale.unlink()
    if not cfg_path.exists():
        atomic_write_text(cfg_path, config.to_json() + "\n")


#: The word timings of the WAVs made so far, one JSON line per WAV (in ``wavs/``, so that overwrite removes it).
WORDS_NAME = "words.jsonl"


def _entry(e: PlannedEntry, seconds: dict[str, float], words: dict[str, list]) -> ManifestEntry:
    u = e.main
    meta = {"kind": e.kind, "rate": u.rate, "pitch": u.pitch, "intonation": u.intonation, **e.meta}
    out = ManifestEntry(
        id=e.id, audio=u.path, text=u.text, speaker=u.voice, duration=seconds[u.uid], alignment=words[u.uid], meta=meta
    )
    if e.answer is not None:
        out.answer_audio = e.answer.path
        out.answer_text = e.answer.text
        out.answer_duration = seconds[e.answer.uid]
        out.answer_alignment = words[e.answer.uid]
        meta["answer_speaker"] = e.answer.voice
    if e.target is not None:
        out.target_audio = e.target.path
        out.target_duration = seconds[e.target.uid]
        out.target_alignment = words[e.target.uid]
        meta["target_speaker"] = e.target.voice
    if e.segments is not None:
        out.segments = [Segment(text, None if s is None else s.path) for text, s in e.segments]
    return out


def build_corpus(
    config: CorpusConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    stop_after: int | None = None,
    overwrite: bool = False,
    espeak: Espeak | None = None,
) -> CorpusReport:
    """Synthesise the corpus ``config`` describes into ``out_dir`` (resuming a partial build).

    Args:
        progress: show a tqdm bar.
        stop_after: stop after synthesising this many new WAVs (an interruption on purpose); the
            report then has ``complete=False`` and no manifests are written. Call again to resume.
        overwrite: delete the corpus files of ``out_dir`` (``corpus.json``, ``wavs/``, manifests)
            first, instead of refusing a folder built with another config.
        espeak: the synthesiser (default: the process-wide one).
    Raises:
        CorpusError: ``out_dir`` holds a corpus with a different config, or a damaged WAV.
        ConfigError, UnknownVoiceError: the config is invalid or names a voice espeak lacks.
    """
    if not isinstance(config, CorpusConfig):
        raise ConfigError(f"build_corpus expects a CorpusConfig, got {type(config).__name__}")
    if stop_after is not None and stop_after < 0:
        raise ConfigError(f"stop_after must be >= 0 or None, got {stop_after}")
    start = time.perf_counter()
    espeak = espeak or get_espeak()
    for v in [*config.voices, *config.heldout_voices, config.answer_voice]:
        espeak.check_voice(v)
    plan = make_plan(config)
    out_dir = check_output_folder(out_dir, "corpus folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    _prepare_dir(out_dir, config, overwrite)

    frames: dict[str, int] = {}
    words_path = out_dir / WAV_DIR / WORDS_NAME
    words = _read_words(words_path)
    synthesized = reused = 0
    new_frames = 0

    def speak(u: Utterance) -> tuple[torch.Tensor, list]:
        audio, onsets = espeak.synthesize_aligned(
            u.text, u.voice, rate_wpm=u.rate, pitch=u.pitch, pitch_range=u.intonation,
            sample_rate=config.sample_rate, margin_seconds=config.margin_seconds,
        )  # fmt: skip
        return audio, [list(w) for w in onsets] or None  # no word events: no alignment (the manifest allows none)

    bar = tqdm(total=len(plan.utterances), desc="synthesising", unit="wav", disable=not progress, dynamic_ncols=True)
    if words_path.is_file() and words_path.stat().st_size and not words_path.read_bytes().endswith(b"\n"):
        with open(words_path, "a", encoding="utf-8") as log:
            log.write("\n")  # close a line torn by a killed build, so that the next line stands alone
    with _one_torch_thread(), contextlib.closing(bar), open(words_path, "a", encoding="utf-8") as words_log:
        for u in plan.utterances:
            path = out_dir / u.path
            if path.exists():
                frames[u.uid] = _existing_frames(path, config.sample_rate)
                if u.uid not in words:  # a WAV from a build before word timings: speak it again for them
                    audio, words[u.uid] = speak(u)
                    if audio.shape[-1] != frames[u.uid]:
                        raise CorpusError(
                            f"{path} has {frames[u.uid]} samples but speaking its text again gives "
                            f"{audio.shape[-1]}: the folder was built by another espeak; build into a new "
                            "folder, or pass overwrite=True (--overwrite) to speak it all again"
                        )
                    _log_words(words_log, u.uid, words[u.uid])
                reused += 1
            else:
                if stop_after is not None and synthesized >= stop_after:
                    break
                audio, words[u.uid] = speak(u)
                _write_wav(path, audio.numpy(), config.sample_rate)
                _log_words(words_log, u.uid, words[u.uid])
                frames[u.uid] = int(audio.shape[-1])
                new_frames += frames[u.uid]
                synthesized += 1
            bar.update(1)

    complete = len(frames) == len(plan.utterances)
    entries, too_long = plan.entries, []
    if complete:
        seconds = {uid: round(n / config.sample_rate, 6) for uid, n in frames.items()}
        # Training skips an entry longer than its limit, so the manifests leave it out rather than promise
        # it. Dropped after synthesis, not planned away: how long espeak speaks a text is known only then,
        # and the plan (texts, file names) must stay the same for a seed so that a build can resume.
        too_long = [e.id for e in entries if _longest(e, frames) / config.sample_rate > MAX_SECONDS]
        entries = [e for e in entries if e.id not in too_long]
        for split in SPLITS:
            write_manifest(out_dir / f"{split}.jsonl", [_entry(e, seconds, words) for e in entries if e.split == split])
    counts = {s: {k: 0 for k in KINDS} for s in SPLITS}
    for e in entries:
        counts[e.split][e.kind] += 1
    sr = config.sample_rate
    return CorpusReport(
        out_dir=out_dir,
        complete=complete,
        counts=counts,
        n_utterances=len(plan.utterances),
        synthesized=synthesized,
        reused=reused,
        audio_seconds=sum(frames.values()) / sr,
        synthesized_seconds=new_frames / sr,
        wall_seconds=time.perf_counter() - start,
        too_long=too_long,
    )


def _read_words(path: Path) -> dict[str, list]:
    """The word timings logged by earlier builds into ``path``, by WAV uid (a torn last line is ignored)."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
            out[item["uid"]] = item["words"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a killed build: its WAV is spoken again
    return out


def _log_words(log, uid: str, words: list) -> None:
    log.write(json.dumps({"uid": uid, "words": words}) + "\n")
    log.flush()


def _longest(e: PlannedEntry, frames: dict[str, int]) -> int:
    """Frames of the longest of an entry's audio, answer and target (what training's ``max_seconds`` limits)."""
    return max(frames[u.uid] for u in (e.main, e.answer, e.target) if u is not None)
