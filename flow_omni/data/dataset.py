"""Manifest entries → training :class:`~flow_omni.layout.Sample` s in the four task formats.

Task formats (Mini-Omni / Flow-Omni; docs/design.md, "Layouts"):

========  =========================  ==================================  ===========================
task      prompt                     target                              entries that support it
========  =========================  ==================================  ===========================
``A2T``   the utterance's audio      its transcript (ASR)                every entry
``T2A``   the transcript             text + speech of the utterance      every entry
``A2A``   the question's audio       answer text + answer speech         entries with an answer
``T2T``   the question's text        answer text                         entries with ``answer_text``
``MIX``   —                          the document, spans as text/speech  entries with ``segments``
========  =========================  ==================================  ===========================

Augmentation (:class:`~flow_omni.audio.augment.Augmenter`) is a transform on the *input* side
(the prompt audio of A2T / A2A) applied with probability ``p_augment``; targets stay clean unless
``augment_targets`` is set, so that a noisy-domain fine-tune learns to read noisy speech while it
keeps speaking clean speech. Every random choice of an item comes from the item's own seed.

An item whose audio cannot be read or featurised is not an exception: the dataset returns a
:class:`~flow_omni.data.report.Skipped` line naming the entry and the file, the :class:`Collator`
leaves it out of the batch, and the data module reports it (or stops the run), see
:mod:`flow_omni.data.report`.

The T2A target speech is the entry's ``target_audio`` when it has one (the synthetic corpus speaks
every text in its one output voice there, so that a model is not asked to guess which of many
voices to use) and its ``audio`` otherwise (:attr:`ManifestEntry.t2a_audio`); A2T and A2A always
hear ``audio``, in whatever voice it is. MIX targets are the segments' own audio.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from flow_omni.audio.augment import AugmentConfig, Augmenter
from flow_omni.config import Config
from flow_omni.data.feature_mask import FeatureMaskConfig, mask_features
from flow_omni.data.features import FeatureCache, about_file
from flow_omni.data.manifest import ManifestEntry
from flow_omni.data.report import Collated, EmptyBatch, Skipped
from flow_omni.data.sampler import TASK_ORDER, ItemKey
from flow_omni.errors import ConfigError, FlowOmniError
from flow_omni.layout import Batch, Sample


def whisper_features(cache: FeatureCache, encoder, path: str) -> torch.Tensor:
    """A Whisper speech encoder's input features of a file ``(F, C)``, from the disk cache when there."""
    return cache.get(path, "whisper", encoder.feature_spec(), encoder.featurize)


def has_whisper_features(cache: FeatureCache, encoder, path: str) -> bool:
    """Whether :func:`whisper_features` of the file would come from the disk cache."""
    return cache.has(path, "whisper", encoder.feature_spec())


#: The longest entry (its ``audio``, ``answer_audio`` or ``target_audio``, in seconds) that training uses
#: by default (``DataConfig.max_seconds``). The synthetic corpus keeps its entries within it and
#: ``flow-omni manifest validate`` flags longer ones, so a corpus that validates clean trains on every entry.
MAX_SECONDS = 20.0


@dataclasses.dataclass
class DataConfig(Config):
    """Where the data comes from and how items are drawn (the ``data:`` block of a training YAML)."""

    train: list[str] = dataclasses.field(default_factory=list)  # manifest paths
    valid: list[str] = dataclasses.field(default_factory=list)
    task_weights: dict = dataclasses.field(
        default_factory=lambda: {"A2T": 1.0, "T2A": 1.0, "A2A": 1.0, "T2T": 0.5, "MIX": 0.5}
    )
    batch_size: int = 8  # global: split over DDP ranks
    bucket_size: int = 16  # batches per length-sorting window
    #: folder of the feature cache; "auto" = ``feature_cache/`` next to the first train manifest; null = off
    cache_dir: str | None = "auto"
    augment: AugmentConfig | None = None
    p_augment: float = 0.0  # probability that an input utterance goes through ``augment``
    augment_targets: bool = False
    #: SpecAugment-style time and channel masks on every input's encoder features (training only; the
    #: features may come from the cache, unlike ``augment``); None = off
    feature_mask: FeatureMaskConfig | None = None
    max_seconds: float = MAX_SECONDS  # longer entries are skipped (counted in the validation report)
    max_items: int | None = None  # use only the first N entries of each manifest (quick runs)
    #: a bad manifest line, or a file that cannot be read or featurised when training reaches it:
    #: "skip" it (listed in data_report.txt) or "stop" the run with a line naming it
    on_error: str = "skip"
    check_audio: bool = True  # open every file once before training (reports corrupt files up front)
    num_workers: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.task_weights) - set(TASK_ORDER))
        if unknown:
            raise ConfigError(f"DataConfig.task_weights: unknown task(s) {unknown}; valid: {list(TASK_ORDER)}")
        if any((not isinstance(w, (int, float))) or w < 0 for w in self.task_weights.values()):
            raise ConfigError(f"DataConfig.task_weights: weights must be numbers >= 0, got {self.task_weights}")
        if not 0.0 <= self.p_augment <= 1.0:
            raise ConfigError(f"DataConfig.p_augment must be within [0, 1], got {self.p_augment}")
        if self.p_augment > 0 and self.augment is None:
            self.augment = AugmentConfig()
        if self.on_error not in ("skip", "stop"):
            raise ConfigError(f"DataConfig.on_error must be 'skip' or 'stop', got {self.on_error!r}")
        if self.batch_size < 1 or self.num_workers < 0 or self.max_seconds <= 0:
            raise ConfigError("DataConfig: batch_size >= 1, num_workers >= 0 and max_seconds > 0 are required")

    def resolved_cache_dir(self) -> Path | None:
        if self.cache_dir is None:
            return None
        if self.cache_dir == "auto":
            if not self.train:
                return None
            return Path(self.train[0]).resolve().parent / "feature_cache"
        return Path(self.cache_dir)


def eligible_tasks(entry: ManifestEntry) -> list[str]:
    tasks = ["A2T", "T2A"]
    if entry.answer_audio and entry.answer_text:
        tasks.append("A2A")
    if entry.answer_text:
        tasks.append("T2T")
    if entry.segments and any(s.audio for s in entry.segments):
        tasks.append("MIX")
    return tasks


@dataclass
class Item:
    """What the dataset returns: a sample, its seed, and what augmentation did to its input."""

    sample: Sample
    seed: int
    key: ItemKey
    augment: dict


class SpeechDataset(Dataset):
    """Map-style dataset indexed by :class:`ItemKey` (from :class:`BucketBatchSampler`).

    Args:
        entries: resolved manifest entries.
        model: the FlowOmni whose speech tokenizer (normalisation, ``r``) and encoder features are
            used; only those two small parts are touched.
    """

    def __init__(self, entries: Sequence[ManifestEntry], model, config: DataConfig, cache: FeatureCache) -> None:
        self.entries = list(entries)
        self.config = config
        self.cache = cache
        self.tokenizer = model.speech_tokenizer
        self.encoder = model.encoder
        self.aligned = model.config.layout.kind == "aligned"  # speech targets need their word onsets
        speaks = any(config.task_weights.get(t, 0) > 0 for t in ("T2A", "A2A"))
        if self.aligned and speaks and self.entries:
            if not any(e.t2a_alignment or e.answer_alignment for e in self.entries):
                raise ConfigError(
                    f"the aligned layout needs word onsets for its speech targets, and none of the "
                    f"{len(self.entries)} manifest entries has them (alignment, target_alignment, "
                    "answer_alignment; flow-omni corpus writes them); use the parallel layout, or train "
                    "only A2T/T2T (data.task_weights)"
                )
        self.augmenter = (
            Augmenter(config.augment, sample_rate=cache.mel_config.sample_rate) if config.p_augment > 0 else None
        )

    def __len__(self) -> int:
        return len(self.entries)

    def eligible(self) -> list[list[str]]:
        return [eligible_tasks(e) for e in self.entries]

    def cost(self, index: int, task: str) -> float:
        """Estimated sequence length (positions) of an item, for length bucketing."""
        e = self.entries[index]
        rate = self.tokenizer.config.token_rate
        q_sec = e.duration or 0.0
        a_sec = e.answer_duration or 0.0
        if task == "A2T":
            return q_sec * rate + len(e.text)
        if task == "T2A":
            return len(e.text) + max(len(e.text), (e.t2a_duration or 0.0) * rate)
        if task == "A2A":
            return q_sec * rate + max(len(e.answer_text or ""), a_sec * rate)
        if task == "MIX":  # about half of the document is spoken
            return len(e.text) / 2 + q_sec * rate / 2
        return len(e.text) + len(e.answer_text or "")

    # ------------------------------------------------------------------------------- features
    def _input_features(self, path: str, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
        """Encoder input features of an utterance, augmented with probability ``p_augment``, then masked
        when ``feature_mask`` is set."""
        feats, info = self._clean_or_augmented_features(path, rng)
        if self.config.feature_mask is not None:
            feats = mask_features(feats, self.config.feature_mask, rng)
            info = {**info, "applied": [*info["applied"], "feature_mask"]}
        return feats, info

    def _clean_or_augmented_features(self, path: str, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
        if self.augmenter is not None and rng.random() < self.config.p_augment:
            audio, info = self.augmenter(self.cache.load_audio(path), int(rng.integers(2**62)))
            with about_file(path):  # e.g. sped up below the log-mel's shortest input
                return self.encoder.featurize(audio, self.tokenizer), info
        if self.encoder.config.kind == "whisper":
            return whisper_features(self.cache, self.encoder, path), {"applied": []}
        return self.tokenizer.encode_mel(self.cache.mel(path)), {"applied": []}

    def _target_speech(
        self, path: str, rng: np.random.Generator, words: list[list] | None = None
    ) -> tuple[torch.Tensor, list[tuple[int, float]] | None]:
        """Target speech tokens of a file and its word onsets ``words``, both through the same augmentation
        (a speed change moves the onsets with the audio)."""
        if self.config.augment_targets and self.augmenter is not None and rng.random() < self.config.p_augment:
            clean = self.cache.load_audio(path)
            audio, _ = self.augmenter(clean, int(rng.integers(2**62)))
            with about_file(path):
                return self.tokenizer.encode(audio), _pairs(words, audio.shape[-1] / clean.shape[-1])
        return self.tokenizer.encode_mel(self.cache.mel(path)), _pairs(words)

    def _check_alignment(self, words: list[list] | None, field: str) -> None:
        if self.aligned and words is None:
            raise FlowOmniError(
                f"no {field} (word onsets) for the aligned layout; flow-omni corpus writes them, "
                "a forced aligner can give them for recorded speech"
            )

    def __getitem__(self, key: ItemKey) -> Item | Skipped:
        if not isinstance(key, ItemKey):
            raise TypeError("SpeechDataset is indexed by ItemKey; use it with BucketBatchSampler")
        e = self.entries[key.index]
        rng = np.random.default_rng(key.seed)
        info: dict = {"applied": []}
        try:
            with torch.no_grad():
                if key.task == "A2T":
                    feats, info = self._input_features(e.audio, rng)
                    sample = Sample("A2T", prompt_audio=feats, target_text=e.text, prompt_transcript=e.text)
                elif key.task == "T2A":
                    self._check_alignment(e.t2a_alignment, "target_alignment" if e.target_audio else "alignment")
                    speech, words = self._target_speech(e.t2a_audio, rng, e.t2a_alignment)
                    sample = Sample(
                        "T2A", prompt_text=e.text, target_text=e.text, target_speech=speech, target_alignment=words
                    )
                elif key.task == "A2A":
                    self._check_alignment(e.answer_alignment, "answer_alignment")
                    feats, info = self._input_features(e.audio, rng)
                    speech, words = self._target_speech(e.answer_audio, rng, e.answer_alignment)
                    sample = Sample(
                        "A2A",
                        prompt_audio=feats,
                        target_text=e.answer_text,
                        target_speech=speech,
                        target_alignment=words,
                        prompt_transcript=e.text,
                    )
                elif key.task == "T2T":
                    sample = Sample("T2T", prompt_text=e.text, target_text=e.answer_text)
                else:
                    spans = [(s.text, self._target_speech(s.audio, rng)[0] if s.audio else None) for s in e.segments]
                    sample = Sample("MIX", segments=spans)
        except FlowOmniError as exc:
            return Skipped(f"entry {e.id!r}: {exc}")
        return Item(sample, key.seed, key, info)


def _pairs(words: list[list] | None, stretch: float = 1.0) -> list[tuple[int, float]] | None:
    """Manifest word onsets as ``(character index, seconds)``, the times scaled by ``stretch``."""
    return None if words is None else [(int(c), float(t) * stretch) for c, t in words]


class Collator:
    """Items → a right-padded training :class:`Batch` (with per-item seeds), via the model's layout.

    Skipped items are left out of the batch and their lines passed on; the batch is an
    :class:`~flow_omni.data.report.EmptyBatch` when every item was skipped.
    """

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, items: Sequence[Item | Skipped]) -> Collated:
        good = [it for it in items if isinstance(it, Item)]
        skipped = [it.line for it in items if isinstance(it, Skipped)]
        if not good:
            return Collated(EmptyBatch(), skipped)
        batch: Batch = self.model.collate([it.sample for it in good])
        batch.seeds = torch.tensor([it.seed for it in good], dtype=torch.long)
        return Collated(batch, skipped)
