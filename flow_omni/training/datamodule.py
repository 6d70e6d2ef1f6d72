"""The LightningDataModule: manifests → validated entries → bucketed, resumable batches.

Resuming mid-epoch: the module counts the batches that actually reach ``training_step`` (in
``on_before_batch_transfer``, which runs for the batch about to be trained, not for the one
Lightning prefetches) and stores the count in the checkpoint; on load the batch sampler continues
its plan right after that many batches. Together with per-item seeds this makes a resumed run see the
same batches with the same noise as an uninterrupted one.

Data problems go to one :class:`~flow_omni.data.report.DataReport` (``data_report.txt``): the lines
that manifest validation skipped, the files that fail while the speech statistics are fitted
(their entries leave the training set), and the items a batch had to leave out (recorded here, in
the main process, from what the collate function passed on).
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader

from flow_omni.audio.mel import MelConfig
from flow_omni.data.dataset import Collator, DataConfig, SpeechDataset, whisper_features
from flow_omni.data.features import FeatureCache
from flow_omni.data.manifest import ManifestEntry
from flow_omni.data.report import Collated, DataReport
from flow_omni.data.sampler import BucketBatchSampler
from flow_omni.data.validate import validate_manifest
from flow_omni.errors import FlowOmniError


def load_entries(
    paths: list[str], config: DataConfig, *, what: str = "train", mel: MelConfig | None = None
) -> tuple[list[ManifestEntry], list[str]]:
    """Validated entries of several manifests and the report lines of every skipped one.

    Bad lines (missing or unreadable audio, empty text, bad JSON, audio too short for the log-mel
    ``mel``…) are skipped with one report line each, or stop the run at the first, as
    ``config.on_error`` says; entries longer than ``max_seconds`` are skipped and reported too.
    """
    entries: list[ManifestEntry] = []
    report: list[str] = []
    for path in paths:
        rep = validate_manifest(
            path,
            on_error=config.on_error,
            check_audio=config.check_audio,
            max_duration=config.max_seconds,
            mel=mel,
        )
        report += rep.lines()
        got = rep.entries[: config.max_items] if config.max_items else rep.entries
        entries += got
    if not entries:
        raise FlowOmniError(f"no usable {what} entries in {paths}" + (f"; problems: {report[:5]}" if report else ""))
    return entries, report


class FlowOmniDataModule(L.LightningDataModule):
    def __init__(self, model, config: DataConfig, *, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.seed = seed
        self.cache = FeatureCache(config.resolved_cache_dir(), model.config.speech.mel)
        self.train_entries: list[ManifestEntry] = []
        self.valid_entries: list[ManifestEntry] = []
        self.report = DataReport(config.on_error)
        self._train_sampler: BucketBatchSampler | None = None
        self._consumed = 0  # global training batches that reached training_step

    def setup(self, stage: str | None = None) -> None:
        if self.train_entries:
            return
        mel = self.cache.mel_config
        self.train_entries, rep = load_entries(self.config.train, self.config, what="train", mel=mel)
        self.report.extend(rep)  # validate_manifest has logged each line already
        if self.config.valid:
            self.valid_entries, rep = load_entries(self.config.valid, self.config, what="valid", mel=mel)
            self.report.extend(rep)

    def speech_mels(self, max_files: int, *, spoken_only: bool = False) -> list[torch.Tensor]:
        """Raw log-mels of up to ``max_files`` training files (for fitting the token statistics), in
        manifest order: each entry's input audio, spoken answer and T→A target.

        ``spoken_only`` takes only the speech the model is trained to say (each entry's T→A target,
        :attr:`~flow_omni.data.manifest.ManifestEntry.t2a_audio`, and its spoken answer): what a
        codebook must hold. Input voices the model never speaks would take codes from it.

        A file that cannot be read or featurised is reported (or stops the run, as
        ``data.on_error`` says), and every training entry that names it is dropped: it would fail
        again each time a batch drew it.
        """
        mels: list[torch.Tensor] = []
        seen: set[str] = set()
        bad: dict[str, str] = {}
        for e in self.train_entries:
            for path in (e.t2a_audio, e.answer_audio) if spoken_only else (e.audio, e.answer_audio, e.target_audio):
                if path and path not in seen and len(mels) < max_files:
                    seen.add(path)
                    try:
                        mels.append(self.cache.mel(path))
                    except FlowOmniError as exc:
                        bad[path] = str(exc)
                        self.report.add(f"entry {e.id!r}: {exc}")
        if bad:
            keep = []
            for e in self.train_entries:
                why = next((bad[p] for p in (e.audio, e.answer_audio, e.target_audio) if p in bad), None)
                if why is None:
                    keep.append(e)
                else:
                    self.report.add(f"entry {e.id!r}: {why}")
            if not keep:
                raise FlowOmniError(
                    f"no usable train entries in {self.config.train}; problems: {self.report.lines[:5]}"
                )
            self.train_entries = keep
        return mels

    def encoder_features(self) -> Iterator[torch.Tensor]:
        """The speech encoder's features ``(F, C)`` of every training input audio, each file once, from
        the disk cache when there (for fitting an encoder that reads discrete units). Files the data
        report has dropped are not among the entries any more."""
        seen: set[str] = set()
        for e in self.train_entries:
            if e.audio and e.audio not in seen:
                seen.add(e.audio)
                yield whisper_features(self.cache, self.model.encoder, e.audio)

    def _world(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        return 0, 1

    def _loader(self, entries, *, shuffle: bool) -> DataLoader:
        ds = SpeechDataset(entries, self.model, self.config if shuffle else _no_augment(self.config), self.cache)
        rank, world = self._world()
        bs = self.config.batch_size if shuffle else max(world, min(self.config.batch_size, len(entries)))
        bs -= bs % world
        sampler = BucketBatchSampler(
            ds.eligible(),
            ds.cost,
            self.config.task_weights,
            bs,
            bucket_size=self.config.bucket_size,
            seed=self.seed,
            shuffle=shuffle,
            drop_last=shuffle,
            rank=rank,
            world_size=world,
        )
        kwargs = {}
        if self.config.num_workers > 0:
            kwargs = {"num_workers": self.config.num_workers, "persistent_workers": True, "worker_init_fn": _one_thread}
        return DataLoader(ds, batch_sampler=sampler, collate_fn=Collator(self.model), **kwargs)

    def train_dataloader(self) -> DataLoader:
        loader = self._loader(self.train_entries, shuffle=True)
        self._train_sampler = loader.batch_sampler
        self._train_sampler.resume_at(self._consumed)
        return loader

    def val_dataloader(self):
        return self._loader(self.valid_entries, shuffle=False) if self.valid_entries else []

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        # Runs for the batch about to be trained (not for one Lightning has only prefetched), in the
        # main process: the place to report the items the batch left out, or to stop on them.
        if isinstance(batch, Collated):
            for line in batch.skipped:
                self.report.add(line)
            batch = batch.batch
        if self.trainer is not None and self.trainer.training:
            self._consumed += 1  # a batch whose items were all skipped still takes its place in the plan
        return batch

    def state_dict(self) -> dict:
        return {"batches_consumed": self._consumed}

    def load_state_dict(self, state: dict) -> None:
        self._consumed = int(state["batches_consumed"])
        if self._train_sampler is not None:  # the loader exists already: move its position too
            self._train_sampler.resume_at(self._consumed)


def _no_augment(config: DataConfig) -> DataConfig:
    """Validation reads its inputs as they are: no audio augmentation and no feature masks."""
    if config.p_augment > 0 or config.feature_mask is not None:
        return config.replace(p_augment=0.0, augment=None, feature_mask=None)
    return config


def _one_thread(_worker_id: int) -> None:
    # Feature extraction in workers must not fight the training process for the cores.
    torch.set_num_threads(1)
