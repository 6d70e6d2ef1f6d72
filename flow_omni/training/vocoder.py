"""Train a Vocos vocoder on your own audio: vocos' own GAN recipe under Lightning 2.x.

No vocoder weights ship offline (docs/design.md, "Offline assets"), so the library trains its own. This module is
``vocos.experiment.VocosExp`` (vocos 0.1.0) ported to Lightning 2.x, with the same generator
(:func:`~flow_omni.vocoder.build_vocos`, any size), the same discriminators
(``MultiPeriodDiscriminator`` + ``MultiResolutionDiscriminator``), the same losses (hinge
``GeneratorLoss`` / ``DiscriminatorLoss``, ``FeatureMatchingLoss``, ``MelSpecReconstructionLoss``
weighted by ``mel_loss_coeff`` = 45), the same optimisers (two AdamW, betas 0.8/0.9), cosine
schedules with warm-up, optional mel-only pre-training and optional mel-coefficient decay.

What had to change for Lightning 2.x (vocos 0.1.0 targets pytorch_lightning 1.8):

* ``training_step(batch, batch_idx, optimizer_idx)`` — several optimisers under automatic
  optimisation — no longer exists. :class:`VocosGAN` uses manual optimisation: per batch one
  discriminator update, then one generator update, each inside ``toggle_optimizer`` (which
  Lightning 1.x did implicitly, so the generator loss does not compute discriminator weight
  gradients), then both schedulers step.
* ``validation_epoch_end`` was removed; validation logs per-step metrics aggregated by ``self.log``.
* Step accounting: Lightning counts every ``optimizer.step()`` in ``trainer.global_step``. vocos'
  own configs rely on that ("max_steps 2M = 1M generator + 1M discriminator steps"). Here the
  discriminator optimiser is stepped on *every* batch — during mel pre-training with no gradients,
  which leaves every weight and the AdamW state untouched — so ``global_step == 2 × batches``
  always, and ``VocoderTrainConfig.max_steps`` / ``checkpoint_every_steps`` /
  ``pretrain_mel_steps`` / schedules all count batches (= generator updates).
* UTMOS / PESQ / periodicity need downloads or extra packages; validation logs the mel L1
  (vocos' ``val/mel_loss``) and a multi-resolution STFT distance instead.

Shapes: audio batches are ``(B, T)`` with ``T = segment_samples`` (a multiple of the hop, so the
vocoder returns exactly ``T`` samples).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset, Sampler
from vocos.discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator
from vocos.loss import DiscriminatorLoss, FeatureMatchingLoss, GeneratorLoss, MelSpecReconstructionLoss

from flow_omni.audio.io import SILENCE_PEAK, load_audio
from flow_omni.checkpoint import atomic_write_text
from flow_omni.checks import check_output_folder
from flow_omni.config import Config
from flow_omni.data.manifest import read_manifest
from flow_omni.data.report import Collated, DataReport
from flow_omni.errors import AudioError, ConfigError, FlowOmniError
from flow_omni.precision import bf16_arithmetic
from flow_omni.training.checkpoint_io import AtomicCheckpointIO, check_resumable
from flow_omni.training.run_folder import RunLock, launch_rank, prepare_run_folder
from flow_omni.training.schedule import warmup_cosine
from flow_omni.vocoder.vocos_vocoder import Vocoder, VocoderConfig

#: Precisions that work: Vocos' ISTFT head builds a complex spectrum, which has no bf16/fp16 kernels,
#: so under ``bf16-mixed`` the head runs in fp32 (see :meth:`VocosGAN.forward`). ``16-mixed`` is
#: refused: its GradScaler cannot step an optimiser without gradients (the pre-training phase).
PRECISIONS = ("32-true", "32", "bf16-mixed")


@dataclasses.dataclass
class VocoderTrainConfig(Config):
    """One vocoder training run. Steps count batches (= generator updates); see the module doc."""

    train_manifests: list[str] = dataclasses.field(default_factory=list)
    val_manifests: list[str] = dataclasses.field(default_factory=list)
    out_dir: str = "runs/vocoder"
    vocoder: VocoderConfig = dataclasses.field(default_factory=VocoderConfig)
    # data (vocos: 16384-sample training crops, 48384-sample validation crops, batch 16)
    segment_samples: int = 16384
    val_segment_samples: int = 48384
    batch_size: int = 16
    num_workers: int = 4
    gain_db_range: list[float] = dataclasses.field(default_factory=lambda: [-6.0, -1.0])
    val_gain_db: float = -3.0
    seed: int = 4444
    #: a file that cannot be read when a batch draws it: "skip" it (a crop of the next file that
    #: reads takes its place; listed in data_report.txt) or "stop" the run with a line naming it
    on_error: str = "skip"
    # optimisation
    max_steps: int = 1_000_000
    lr_generator: float = 5e-4
    lr_discriminator: float = 5e-4
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.8, 0.9])
    weight_decay: float = 0.01  # AdamW's default, as in vocos
    warmup_steps: int = 0
    # losses
    mel_loss_coeff: float = 45.0
    mrd_loss_coeff: float = 0.1
    pretrain_mel_steps: int = 0
    decay_mel_coeff: bool = False
    mpd_periods: list[int] = dataclasses.field(default_factory=lambda: [2, 3, 5, 7, 11])
    mrd_fft_sizes: list[int] = dataclasses.field(default_factory=lambda: [2048, 1024, 512])
    # trainer
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    log_every_steps: int = 100
    checkpoint_every_steps: int = 10_000
    keep_checkpoints: int = 3
    val_every_steps: int = 10_000
    val_max_batches: int | None = 100

    def __post_init__(self) -> None:
        if isinstance(self.vocoder, dict):  # VocoderTrainConfig(vocoder={...}) written by hand
            self.vocoder = VocoderConfig.from_dict(self.vocoder, _where="VocoderTrainConfig.vocoder")
        v, hop = self.vocoder, self.vocoder.hop_length
        for name in ("segment_samples", "val_segment_samples"):
            n = getattr(self, name)
            if n <= 0 or n % hop:
                raise ConfigError(
                    f"{name} must be a positive multiple of hop_length {hop} (so the vocoder "
                    f"returns exactly that many samples), got {n}"
                )
            shortest = max(v.n_fft, *self.mrd_fft_sizes) // 2
            if n <= shortest:
                raise ConfigError(f"{name}={n} is too short: STFTs of size {2 * shortest} need more than {shortest}")
        positive = ("batch_size", "max_steps", "log_every_steps", "checkpoint_every_steps", "val_every_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0 or self.warmup_steps < 0 or self.keep_checkpoints == 0 or self.keep_checkpoints < -1:
            raise ConfigError("need num_workers >= 0, warmup_steps >= 0, keep_checkpoints >= 1 (or -1 for all)")
        if not 0 <= self.pretrain_mel_steps <= self.max_steps:
            raise ConfigError(
                f"pretrain_mel_steps must be within [0, max_steps={self.max_steps}], got {self.pretrain_mel_steps}"
            )
        if self.lr_generator <= 0 or self.lr_discriminator <= 0 or self.weight_decay < 0:
            raise ConfigError("learning rates must be > 0 and weight_decay >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas}")
        lo_hi = self.gain_db_range
        if len(lo_hi) != 2 or not lo_hi[0] <= lo_hi[1] <= 0 or self.val_gain_db > 0:
            raise ConfigError(f"gain_db_range must be [low, high] dBFS with low <= high <= 0, got {lo_hi}")
        if self.mel_loss_coeff < 0 or self.mrd_loss_coeff < 0:
            raise ConfigError("loss coefficients must be >= 0")
        if not self.mpd_periods or not self.mrd_fft_sizes or min(self.mpd_periods) < 1 or min(self.mrd_fft_sizes) < 16:
            raise ConfigError("mpd_periods (>= 1) and mrd_fft_sizes (>= 16) must be non-empty")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.val_max_batches is not None and self.val_max_batches < 1:
            raise ConfigError("val_max_batches must be >= 1 or null")
        if self.on_error not in ("skip", "stop"):
            raise ConfigError(f"on_error must be 'skip' or 'stop', got {self.on_error!r}")

    @property
    def out(self) -> Path:
        return Path(self.out_dir)


# ---------------------------------------------------------------------------------------- data
def manifest_audio_files(manifests: Sequence[str | Path]) -> list[str]:
    """Every ``audio`` and ``answer_audio`` path of the manifests, absolute, first occurrence order."""
    seen: dict[str, None] = {}
    for m in manifests:
        for e in read_manifest(m):
            for p in (e.audio, e.answer_audio):
                if p is not None:
                    seen.setdefault(p, None)
    return list(seen)


class AudioSegmentDataset(Dataset):
    """Fixed-length, peak-normalised crops of audio files (vocos' ``VocosDataset``).

    Keys: ``(file_index, draw)`` gives a random crop and gain drawn from ``(seed, file_index,
    draw)`` only — the same key gives the same item in any worker, on any rank, after a resume; an
    int key gives the deterministic validation item (first ``segment_samples``, gain
    ``val_gain_db``). Clips shorter than a segment are tiled to length (as vocos does), so every
    crop is full of signal. Items are ``(segment_samples,)`` float32.

    A file that cannot be read gives its place to the next file that can (in file order, so the
    item is still a function of its key): a crop is a crop of any speech, and a batch keeps its
    size, which DDP needs. Its error goes to :attr:`problems`, which :meth:`collate` (run in the
    same data-loader worker) passes on with the batch for the run's report.
    """

    def __init__(
        self,
        files: Sequence[str],
        segment_samples: int,
        sample_rate: int,
        *,
        seed: int = 0,
        gain_db_range: Sequence[float] = (-6.0, -1.0),
        val_gain_db: float = -3.0,
    ) -> None:
        if not files:
            raise ConfigError("no audio files to train the vocoder on")
        self.files = list(files)
        self.segment_samples = segment_samples
        self.sample_rate = sample_rate
        self.seed = seed
        self.gain_db_range = tuple(gain_db_range)
        self.val_gain_db = val_gain_db
        self.problems: list[str] = []  # errors met since the last collate
        self._unreadable: dict[int, str] = {}  # file index -> error, so a bad file is not decoded again

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int) -> torch.Tensor:
        n = len(self.files)
        for i in ((index + k) % n for k in range(n)):
            if i in self._unreadable:
                continue
            try:
                return load_audio(self.files[i], self.sample_rate)
            except FlowOmniError as exc:
                self._unreadable[i] = str(exc)
                self.problems.append(str(exc))
        raise AudioError(f"none of the {n} audio files can be read; e.g. {next(iter(self._unreadable.values()))}")

    def collate(self, items: Sequence[torch.Tensor]) -> Collated:
        """The crops stacked ``(B, T)``, with the errors of the files they replaced."""
        problems, self.problems = self.problems, []
        return Collated(torch.stack(list(items)), problems)

    def __getitem__(self, key: int | tuple[int, int]) -> torch.Tensor:
        if isinstance(key, tuple):
            index, draw = key
            rng: np.random.Generator | None = np.random.default_rng([self.seed, int(index), int(draw)])
        else:
            index, rng = int(key), None
        audio = self._load(index)
        gain_db = rng.uniform(*self.gain_db_range) if rng is not None else self.val_gain_db
        peak = float(audio.abs().max())
        if peak >= SILENCE_PEAK:  # sox "norm": peak to gain_db dBFS; leave (near-)silence alone
            audio = audio * (10.0 ** (gain_db / 20.0) / peak)
        n = self.segment_samples
        if audio.shape[-1] < n:
            audio = audio.repeat(-(-n // audio.shape[-1]))[:n]
        elif rng is not None:
            start = int(rng.integers(0, audio.shape[-1] - n + 1))
            audio = audio[start : start + n]
        else:
            audio = audio[:n]
        return audio.contiguous()


class SeededEpochSampler(Sampler):
    """Yields ``(file_index, draw)`` keys: a fresh permutation per epoch, seeded by ``(seed, epoch)``.

    An epoch holds at least ``min_items`` keys (whole permutations, the last one cut), so that a
    corpus smaller than a batch still fills batches. Lightning calls :meth:`set_epoch` (also
    through its distributed wrapper).
    """

    def __init__(self, num_files: int, seed: int, min_items: int = 1) -> None:
        self.num_files = num_files
        self.seed = seed
        self.length = max(num_files, min_items)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        reps = -(-self.length // self.num_files)
        keys = [(int(i), self.epoch * reps + r) for r in range(reps) for i in rng.permutation(self.num_files)]
        return iter(keys[: self.length])


class VocoderDataModule(L.LightningDataModule):
    """Training crops from ``train_manifests``; validation crops from ``val_manifests`` (if any)."""

    def __init__(self, config: VocoderTrainConfig) -> None:
        super().__init__()
        c = self.config = config
        sr = c.vocoder.sample_rate
        common = dict(seed=c.seed, gain_db_range=c.gain_db_range, val_gain_db=c.val_gain_db)
        self.train_set = AudioSegmentDataset(manifest_audio_files(c.train_manifests), c.segment_samples, sr, **common)
        val_files = manifest_audio_files(c.val_manifests)
        self.val_set = AudioSegmentDataset(val_files, c.val_segment_samples, sr, **common) if val_files else None
        self.report = DataReport(c.on_error)

    def train_dataloader(self) -> DataLoader:
        c = self.config
        sampler = SeededEpochSampler(len(self.train_set), c.seed, min_items=c.batch_size)
        return DataLoader(
            self.train_set,
            batch_size=c.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=c.num_workers,
            persistent_workers=c.num_workers > 0,
            collate_fn=self.train_set.collate,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        c = self.config
        return DataLoader(
            self.val_set,
            batch_size=c.batch_size,
            shuffle=False,
            num_workers=c.num_workers,
            collate_fn=self.val_set.collate,
        )

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        # In the main process: report the files that could not be read (or stop on them).
        if isinstance(batch, Collated):
            for line in batch.skipped:
                self.report.add(line)
            batch = batch.batch
        return batch


# ---------------------------------------------------------------------------------------- metrics
def multi_resolution_stft_distance(
    y_hat: torch.Tensor, y: torch.Tensor, fft_sizes: Sequence[int] = (512, 1024, 2048)
) -> torch.Tensor:
    """Mean over resolutions of spectral convergence + log-magnitude L1 (Parallel WaveGAN's STFT loss).

    ``y_hat``, ``y``: ``(B, T)``. Resolutions whose window does not fit in ``T`` are skipped.
    Returns a scalar; 0 for identical signals.
    """
    terms = []
    for n_fft in fft_sizes:
        if n_fft >= y.shape[-1]:
            continue
        window = torch.hann_window(n_fft, device=y.device, dtype=y.dtype)
        spec = [torch.stft(s, n_fft, n_fft // 4, window=window, return_complex=True).abs() for s in (y_hat, y)]
        sc = torch.linalg.vector_norm(spec[1] - spec[0]) / torch.linalg.vector_norm(spec[1]).clamp_min(1e-7)
        log_l1 = (torch.log(spec[1].clamp_min(1e-7)) - torch.log(spec[0].clamp_min(1e-7))).abs().mean()
        terms.append(sc + log_l1)
    if not terms:
        raise ValueError(f"signals of {y.shape[-1]} samples are shorter than every STFT size {list(fft_sizes)}")
    return torch.stack(terms).mean()


# ---------------------------------------------------------------------------------------- module
class VocosGAN(L.LightningModule):
    """``vocos.experiment.VocosExp`` for Lightning 2.x: a :class:`Vocoder` + vocos' discriminators.

    ``self.vocoder`` is the exported generator; ``forward(audio (B, T)) → (B, T)`` reconstructs
    audio through the vocoder's own log-mel.
    """

    def __init__(self, config: VocoderTrainConfig) -> None:
        super().__init__()
        self.config = config
        # Plain types only: resumable with torch.load(weights_only=True) (docs/design.md, "Checkpoints and safety").
        self.save_hyperparameters({"config": config.to_dict()})
        self.automatic_optimization = False
        self.vocoder = Vocoder(config.vocoder).train()  # Vocoder() starts in eval mode
        with warnings.catch_warnings():  # vocos' discriminators use the deprecated weight_norm
            warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
            self.multiperioddisc = MultiPeriodDiscriminator(periods=tuple(config.mpd_periods))
            self.multiresddisc = MultiResolutionDiscriminator(fft_sizes=tuple(config.mrd_fft_sizes))
        self.disc_loss = DiscriminatorLoss()
        self.gen_loss = GeneratorLoss()
        self.feat_matching_loss = FeatureMatchingLoss()
        v = config.vocoder
        # vocos hard-codes the 24 kHz mel here; using the vocoder's own mel keeps other sizes right.
        self.melspec_loss = MelSpecReconstructionLoss(
            sample_rate=v.sample_rate, n_fft=v.n_fft, hop_length=v.hop_length, n_mels=v.n_mels
        )
        self.mel_loss_coeff = config.mel_loss_coeff

    # ----------------------------------------------------------------- generator
    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` → ``(B, T)``: log-mel → backbone → ISTFT head (the mel and the head always in fp32)."""
        vocos = self.vocoder.vocos
        # The mel is the vocoder's input space, shared with the speech tokens, which are float32: under
        # bf16 autocast its filterbank matmul would round it to 8 bits of mantissa before the log.
        with torch.autocast(device_type=audio.device.type, enabled=False):
            mel = vocos.feature_extractor(audio.float())
        x = vocos.backbone(mel)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return vocos.head(x.float())

    def _mel_loss(self, audio_hat: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=audio.device.type, enabled=False):
            return self.melspec_loss(audio_hat.float(), audio.float())

    @property
    def batches_done(self) -> int:
        """Training batches completed (= generator updates); each batch steps both optimisers."""
        return self.trainer.global_step // 2

    def gan_active(self, batch: int | None = None) -> bool:
        return (self.batches_done if batch is None else batch) >= self.config.pretrain_mel_steps

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        c = self.config
        disc_params = [{"params": self.multiperioddisc.parameters()}, {"params": self.multiresddisc.parameters()}]
        kw = dict(betas=tuple(c.betas), weight_decay=c.weight_decay)
        opt_disc = torch.optim.AdamW(disc_params, lr=c.lr_discriminator, **kw)
        opt_gen = torch.optim.AdamW(self.vocoder.parameters(), lr=c.lr_generator, **kw)
        # transformers.get_cosine_schedule_with_warmup, as vocos uses: warm-up from 0, decay to 0.
        factor = functools.partial(warmup_cosine, warmup=c.warmup_steps, total=c.max_steps, warmup_from_zero=True)
        scheds = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in (opt_disc, opt_gen)]
        return [opt_disc, opt_gen], [{"scheduler": s, "interval": "step"} for s in scheds]

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        audio = batch  # (B, T)
        c = self.config
        opt_d, opt_g = self.optimizers()
        sched_d, sched_g = self.lr_schedulers()
        gan = self.gan_active()
        log = functools.partial(self.log, on_step=True, on_epoch=False, batch_size=audio.shape[0])

        # ---- discriminator
        self.toggle_optimizer(opt_d)
        try:
            if gan:
                with torch.no_grad():
                    audio_hat = self(audio)
                real_mp, gen_mp, _, _ = self.multiperioddisc(y=audio, y_hat=audio_hat)
                real_mrd, gen_mrd, _, _ = self.multiresddisc(y=audio, y_hat=audio_hat)
                loss_mp, loss_mp_real, _ = self.disc_loss(disc_real_outputs=real_mp, disc_generated_outputs=gen_mp)
                loss_mrd, loss_mrd_real, _ = self.disc_loss(disc_real_outputs=real_mrd, disc_generated_outputs=gen_mrd)
                loss_mp = loss_mp.squeeze() / len(loss_mp_real)
                loss_mrd = loss_mrd.squeeze() / len(loss_mrd_real)
                loss_d = loss_mp + c.mrd_loss_coeff * loss_mrd
                self.manual_backward(loss_d)
                log("discriminator/grad_norm", _grad_norm(self.multiperioddisc, self.multiresddisc))
                log("discriminator/total", loss_d, prog_bar=True)
                log("discriminator/multi_period_loss", loss_mp)
                log("discriminator/multi_res_loss", loss_mrd)
            # Stepped during mel pre-training too, without gradients (AdamW skips such parameters):
            # keeps trainer.global_step == 2 × batches, the accounting vocos' configs assume.
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)
        finally:
            self.untoggle_optimizer(opt_d)

        # ---- generator
        self.toggle_optimizer(opt_g)
        try:
            audio_hat = self(audio)
            mel_loss = self._mel_loss(audio_hat, audio)
            loss_g = self.mel_loss_coeff * mel_loss
            if gan:
                _, gen_mp, fmap_r_mp, fmap_g_mp = self.multiperioddisc(y=audio, y_hat=audio_hat)
                _, gen_mrd, fmap_r_mrd, fmap_g_mrd = self.multiresddisc(y=audio, y_hat=audio_hat)
                loss_gen_mp, list_mp = self.gen_loss(disc_outputs=gen_mp)
                loss_gen_mrd, list_mrd = self.gen_loss(disc_outputs=gen_mrd)
                loss_gen_mp = loss_gen_mp.squeeze() / len(list_mp)
                loss_gen_mrd = loss_gen_mrd.squeeze() / len(list_mrd)
                loss_fm_mp = self.feat_matching_loss(fmap_r=fmap_r_mp, fmap_g=fmap_g_mp).squeeze() / len(fmap_r_mp)
                loss_fm_mrd = self.feat_matching_loss(fmap_r=fmap_r_mrd, fmap_g=fmap_g_mrd).squeeze() / len(fmap_r_mrd)
                loss_g = (
                    loss_g + loss_gen_mp + c.mrd_loss_coeff * loss_gen_mrd + loss_fm_mp + c.mrd_loss_coeff * loss_fm_mrd
                )
                log("generator/multi_period_loss", loss_gen_mp)
                log("generator/multi_res_loss", loss_gen_mrd)
                log("generator/feature_matching_mp", loss_fm_mp)
                log("generator/feature_matching_mrd", loss_fm_mrd)
            self.manual_backward(loss_g)
            log("generator/grad_norm", _grad_norm(self.vocoder))
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)
        finally:
            self.untoggle_optimizer(opt_g)

        log("generator/total_loss", loss_g, prog_bar=True)
        log("generator/mel_loss", mel_loss, prog_bar=True)
        log("mel_loss_coeff", self.mel_loss_coeff)
        log("lr/generator", sched_g.get_last_lr()[0])
        log("lr/discriminator", sched_d.get_last_lr()[0])
        sched_d.step()
        sched_g.step()
        done = self.batches_done
        # Not sent to the logger: the checkpoint callback names files after it.
        self.log("gen_step", float(done), on_step=True, on_epoch=False, logger=False, batch_size=audio.shape[0])
        if c.decay_mel_coeff:
            self.mel_loss_coeff = c.mel_loss_coeff * self._mel_coeff_factor(done)

    def _mel_coeff_factor(self, step: int) -> float:
        """vocos' ``mel_loss_coeff_decay``: 1 during warm-up, then a half cosine to 0."""
        c = self.config
        if step < c.warmup_steps:
            return 1.0
        return warmup_cosine(step, warmup=c.warmup_steps, total=c.max_steps)

    def on_train_start(self) -> None:
        if self.config.decay_mel_coeff:  # a resumed run continues the decay where it stopped
            self.mel_loss_coeff = self.config.mel_loss_coeff * self._mel_coeff_factor(self.batches_done)

    # ----------------------------------------------------------------- validation
    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        audio = batch
        audio_hat = self(audio)
        mel_loss = self._mel_loss(audio_hat, audio)
        with torch.autocast(device_type=audio.device.type, enabled=False):
            mrstft = multi_resolution_stft_distance(audio_hat.float(), audio.float())
        kw = dict(on_step=False, on_epoch=True, sync_dist=True, batch_size=audio.shape[0])
        self.log("val_loss", mel_loss, **kw)
        self.log("val/mel_loss", mel_loss, **kw)
        self.log("val/mrstft", mrstft, **kw)


def _grad_norm(*modules: torch.nn.Module) -> torch.Tensor:
    grads = [p.grad.detach() for m in modules for p in m.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


# ---------------------------------------------------------------------------------------- entry point
def build_training_module(config: VocoderTrainConfig) -> VocosGAN:
    """Seed everything with ``config.seed``, then build the module (same seed → same initial weights)."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    return VocosGAN(config)


#: Everything a vocoder run writes into its out_dir (a fresh run removes what an earlier one left).
VOCODER_RUN_OUTPUTS = ("checkpoints", "logs", "vocoder", "train_config.yaml", "data_report.txt")


def train_vocoder(
    config: VocoderTrainConfig,
    *,
    progress: bool = True,
    resume: str | Path | None = None,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
) -> Path:
    """Train a Vocos on the manifests' audio; return the exported ``out_dir/"vocoder"`` directory.

    Writes into ``config.out_dir``: ``train_config.yaml``, ``logs/version_N/metrics.csv`` (every
    loss term, learning rates, grad norms, validation), ``checkpoints/*.ckpt`` (Lightning, for
    resuming only: ``last.ckpt`` + the newest ``keep_checkpoints`` periodic ones), ``vocoder/``
    (``Vocoder.save_pretrained``; load it with ``flow_omni.vocoder.Vocoder.from_pretrained``) and
    ``data_report.txt`` (the files that could not be read, see ``on_error``).

    The folder holds one run, as for :func:`~flow_omni.training.train.train`: a lock while it runs,
    and a fresh run refuses an earlier run's checkpoints or export unless ``overwrite``
    (:mod:`flow_omni.training.run_folder`).

    Args:
        resume: a ``.ckpt`` written by an earlier run of the same config, or ``"last"``.
        overwrite: a fresh run may delete an earlier run's outputs in ``out_dir``.
        callbacks: extra Lightning callbacks.
    """
    if not config.train_manifests:
        raise ConfigError("train_manifests is empty: give at least one JSONL manifest of training audio")
    if overwrite and resume is not None:
        raise ConfigError("--overwrite starts the run again from step 0 and --resume continues it; give one of them")
    out = check_output_folder(config.out, "out_dir")
    # Read every manifest before the folder is locked and prepared: a missing or broken one is a one-line
    # error that leaves the folder as it was (the data module reads them again; they are only text).
    manifest_audio_files([*config.train_manifests, *config.val_manifests])
    is_rank0 = launch_rank() == 0
    with RunLock(out) if is_rank0 else contextlib.nullcontext():
        if is_rank0:
            marks = ("checkpoints/*.ckpt", "vocoder")
            notes = prepare_run_folder(
                out, fresh=resume is None, overwrite=overwrite, outputs=VOCODER_RUN_OUTPUTS, marks=marks
            )
            for note in notes:
                print(f"[flow-omni] {note}")
        return _train_vocoder(config, progress=progress, resume=resume, callbacks=callbacks)


def _train_vocoder(
    config: VocoderTrainConfig, *, progress: bool, resume: str | Path | None, callbacks: Sequence[Callback]
) -> Path:
    out = config.out
    data = VocoderDataModule(config)
    module = build_training_module(config)
    if resume is not None:
        check_resumable(module, resume if str(resume) != "last" else out / "checkpoints" / "last.ckpt")
    atomic_write_text(out / "train_config.yaml", config.to_yaml())
    has_val = data.val_set is not None
    checkpoint = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="vocos-step{gen_step:08.0f}",
        auto_insert_metric_name=False,
        monitor="gen_step",
        mode="max",
        save_top_k=config.keep_checkpoints,
        save_last=True,
        every_n_train_steps=2 * config.checkpoint_every_steps,  # global_step counts both optimisers
        enable_version_counter=False,  # overwrite a file of the same name (atomically), never "last-v1.ckpt"
    )
    trainer = L.Trainer(
        default_root_dir=out,
        max_steps=2 * config.max_steps,
        max_epochs=-1,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        precision=config.precision,
        logger=CSVLogger(out, name="logs"),
        callbacks=[checkpoint, *callbacks],
        plugins=[AtomicCheckpointIO()],  # a killed write leaves the previous checkpoint (and a temp file)
        log_every_n_steps=config.log_every_steps,
        val_check_interval=config.val_every_steps if has_val else None,
        check_val_every_n_epoch=None if has_val else 1,
        limit_val_batches=(config.val_max_batches if config.val_max_batches is not None else 1.0) if has_val else 0,
        num_sanity_val_steps=1 if has_val else 0,
        enable_progress_bar=progress,
        enable_model_summary=progress,
    )
    data.report.attach(out / "data_report.txt", write=trainer.is_global_zero, keep_existing=resume is not None)
    fit_kwargs: dict[str, Any] = {"ckpt_path": str(resume) if resume is not None else None}
    if resume is not None and "weights_only" in inspect.signature(trainer.fit).parameters:
        fit_kwargs["weights_only"] = True  # never unpickle arbitrary objects (docs/design.md)
    with warnings.catch_warnings():
        # Lightning 2.6 warns that manual-optimisation checkpoints hold the post-step weights: that
        # is what resuming needs (the loops' state also says "this batch is done").
        warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
        with bf16_arithmetic(config.precision, config.accelerator):
            trainer.fit(module, datamodule=data, **fit_kwargs)
    if not trainer.interrupted:
        # ModelCheckpoint saves only every checkpoint_every_steps: make last.ckpt the end state.
        last = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
        trainer.save_checkpoint(last, weights_only=False)
    target = out / "vocoder"
    if trainer.is_global_zero:
        module.vocoder.save_pretrained(target)
    trainer.strategy.barrier()
    return target


__all__ = [
    "AudioSegmentDataset",
    "PRECISIONS",
    "SeededEpochSampler",
    "VocoderDataModule",
    "VocoderTrainConfig",
    "VocosGAN",
    "build_training_module",
    "manifest_audio_files",
    "multi_resolution_stft_distance",
    "train_vocoder",
]
