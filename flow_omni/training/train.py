"""``train(config)``: one entry point for a laptop, ``torchrun`` and SLURM.

The same call runs as plain ``python``/``flow-omni train`` (one process), under ``torchrun
--nproc_per_node N`` (Lightning reads the torchelastic environment) and under ``srun`` on SLURM
(Lightning reads ``SLURM_*``); with more than one process the strategy is DDP, or FSDP when
``strategy: fsdp``. Outputs under ``out_dir``:

* ``checkpoints/last.ckpt`` — Lightning checkpoint for resuming (written atomically);
* ``logs/`` — CSV (``metrics.csv``) and TensorBoard logs; ``train_log.jsonl`` — per-step losses;
* ``model/`` — the result as ``save_pretrained`` (LoRA merged), with a model card ``README.md`` that says
  how it was trained and, after an evaluation, what was measured; ``adapter/`` — LoRA weights alone;
* ``config.yaml`` — the resolved config; ``data_report.txt`` — the data it skipped: manifest lines,
  and files that could not be read or featurised when the run reached them (one line each);
* ``train.lock`` — held while the run lives (:mod:`flow_omni.training.run_folder`).

A folder holds one run: a fresh run refuses a folder with an earlier run's checkpoint or export
unless told to overwrite it (then it deletes that run's outputs first), and a second process
cannot train into a folder while a run holds its lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import warnings
from pathlib import Path

import torch
import yaml

from flow_omni.checkpoint import atomic_write_text
from flow_omni.checks import check_output_folder
from flow_omni.errors import CheckpointError, ConfigError
from flow_omni.eval.heldout import evaluate_heldout, heldout_rows
from flow_omni.model_card import TrainingRecord, write_model_card
from flow_omni.models.backbone import locate_backbone
from flow_omni.models.flow_omni import FlowOmni, FlowOmniConfig
from flow_omni.models.lora import apply_lora, merge_lora, save_adapter
from flow_omni.precision import AUTO, bf16_arithmetic, precision_note
from flow_omni.stages import Stage, StageReporter
from flow_omni.training.config import GROUPS, TrainConfig
from flow_omni.training.report import write_eval_report
from flow_omni.training.run_folder import RunLock, launch_rank, prepare_run_folder

RECIPE_DIR = Path(__file__).parent / "recipes"
#: Everything a run writes into its out_dir (a fresh run removes what an earlier one left).
RUN_OUTPUTS = (
    "checkpoints",
    "logs",
    "model",
    "adapter",
    "config.yaml",
    "data_report.txt",
    "train_log.jsonl",
    "eval_before.json",
    "eval.json",
    "eval_report.md",
    "report.html",
    "eval_cer.png",
    "wavs",
)
#: What makes an out_dir hold an earlier run: something to resume from, or a result.
RUN_MARKS = ("checkpoints/*.ckpt", "model", "adapter")


def recipe_path(name_or_path: str | Path) -> Path:
    """A YAML path, or the name of a built-in recipe (``stage1``, ``stage2_lora``, …)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    builtin = RECIPE_DIR / f"{name_or_path}.yaml"
    if builtin.is_file():
        return builtin
    names = sorted(x.stem for x in RECIPE_DIR.glob("*.yaml"))
    raise ConfigError(f"config {str(name_or_path)!r} is neither a file nor a built-in recipe; recipes: {names}")


@dataclasses.dataclass
class TrainResult:
    out_dir: Path
    model_dir: Path | None
    adapter_dir: Path | None
    last_checkpoint: Path | None
    steps: int
    seconds: float
    history: list[dict]
    data_report: list[str]
    eval_report: Path | None = None
    #: the time in ``fit`` before this call resumed the run (0 for a fresh run), which its checkpoint kept;
    #: None for a resume from a checkpoint written before checkpoints kept it
    seconds_before_resume: float | None = 0.0

    @property
    def run_seconds(self) -> float | None:
        """Wall time in ``fit`` of the whole run, across resumes (``seconds`` is this call's); None when
        the time before a resume is not known."""
        return None if self.seconds_before_resume is None else self.seconds_before_resume + self.seconds


def build_model(config: TrainConfig) -> FlowOmni:
    spec = config.model
    if spec.init_from:
        return FlowOmni.from_pretrained(spec.init_from).train()
    if spec.backbone_path:
        cfg = FlowOmniConfig.from_pretrained_backbone(spec.backbone_path, gguf_file=spec.gguf_file, r=spec.r)
    else:
        cfg = FlowOmniConfig.preset(spec.preset, r=spec.r)
    return FlowOmni(cfg.merged(spec.overrides) if spec.overrides else cfg)


def _submodule(model: FlowOmni, path: str) -> torch.nn.Module | None:
    """``model.get_submodule(path)``, or None for an optional part the model does not have (postnet)."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def set_trainable(model: FlowOmni, config: TrainConfig) -> dict[str, int]:
    """Freeze everything, unfreeze the configured groups, add LoRA; returns trainable counts per module."""
    model.requires_grad_(False)
    for name in config.trainable_modules():
        module = _submodule(model, name)
        if module is not None:
            module.requires_grad_(True)
    if model.encoder.frozen:  # a frozen encoder body runs at featurize time, outside training
        model.encoder.body.requires_grad_(False)
    if config.lora is not None:
        apply_lora(model, config.lora)
    if "special_tokens" in config.trainable:  # after LoRA, which freezes every other weight of the backbone
        train_special_token_rows(model)
    counts = {}
    for name in GROUPS["all"]:
        module = _submodule(model, name)
        if module is not None:
            counts[name] = sum(_trained_numel(p) for p in module.parameters() if p.requires_grad)
    return counts


def train_special_token_rows(model: FlowOmni) -> None:
    """Make the text-embedding and LM-head rows of the library's special tokens trainable, and no other row.

    In stage 1 the pretrained LLM is frozen, but most of its text targets are tokens the library added to
    the vocabulary: ``<tpad>`` while speech lasts and ``<eot>`` to stop (measured: 70% of the text targets
    of a SmolLM2-135M stage-1 run). With their rows frozen at their random initialisation the model cannot
    learn to predict them: after 120 steps of that run their cross-entropy was 11.8 (``<tpad>``) and 14.1
    (``<eot>``), above a uniform guess. The weights stay whole (a masked gradient), so checkpoints keep
    their layout; AdamW leaves rows without a gradient alone, and the weight is kept out of weight decay
    (``row_mask``), which would shrink the frozen rows too.
    """
    ids = sorted(set(model.special.values()))
    layers = (model.backbone.get_input_embeddings(), model.backbone.get_output_embeddings())
    weights = {id(m.weight): m.weight for m in layers if m is not None}  # one weight when they are tied
    for weight in weights.values():
        if weight.requires_grad:  # the whole backbone trains: every row does already
            continue
        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        mask[ids] = 1.0
        weight.requires_grad_(True)
        weight.register_hook(lambda grad, mask=mask: grad * mask)
        weight.row_mask = mask  # read by FlowOmniModule.configure_optimizers and the counts


def _trained_numel(p: torch.Tensor) -> int:
    mask = getattr(p, "row_mask", None)
    return p.numel() if mask is None else int(mask.sum()) * (p.numel() // p.shape[0])


def _strategy(config: TrainConfig, model: FlowOmni):
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy  # Lightning only when training: see train()

    if config.strategy == "fsdp":
        # Wrap each decoder layer; with LoRA a wrapped unit mixes frozen base weights and trainable
        # adapters, which FSDP only allows with use_orig_params=True (flat parameters must otherwise
        # share requires_grad).
        layer_cls = {type(layer) for layer in model.backbone.base_model.layers}
        return FSDPStrategy(
            auto_wrap_policy=layer_cls, use_orig_params=config.lora is not None, sharding_strategy="FULL_SHARD"
        )
    if config.strategy == "ddp":
        # A rank whose shard has no speech (or no audio input) leaves the flow head (or encoder)
        # without gradients for that step; DDP must be told to expect that.
        return DDPStrategy(find_unused_parameters=True)
    return DDPStrategy(find_unused_parameters=True) if _world_size_hint(config) > 1 else "auto"


def _world_size_hint(config: TrainConfig) -> int:
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if "SLURM_NTASKS" in os.environ:
        return int(os.environ["SLURM_NTASKS"])
    d = str(config.devices)
    if d.isdigit():
        return int(d) * config.num_nodes
    if "," in d:
        return len([x for x in d.split(",") if x.strip()]) * config.num_nodes
    return config.num_nodes


def _devices(config: TrainConfig):
    d = str(config.devices)
    return int(d) if d.isdigit() else d


def train(
    config: TrainConfig, *, resume: str | Path | None = None, overwrite: bool = False, callbacks=()
) -> TrainResult:
    """Run (or resume) a training run; returns where everything was written.

    Args:
        resume: ``"last"`` (``out_dir/checkpoints/last.ckpt``), ``"auto"`` (last if it exists, else
            a fresh run) or a ``.ckpt`` path.
        overwrite: a fresh run into an ``out_dir`` that holds an earlier run (a checkpoint or an
            export) deletes that run's outputs first; without it the run refuses the folder.
        callbacks: extra Lightning callbacks (timers, custom logging) added to the run's own.

    Raises:
        OutputFolderError: ``out_dir`` holds an earlier run (and neither ``resume`` nor
            ``overwrite`` was given), or another process is training into it.
    """
    if overwrite and resume is not None and str(resume) != "auto":
        raise ConfigError(
            "--overwrite starts the run again from step 0 and --resume continues it; give one of them "
            "(--resume auto --overwrite resumes when there is a checkpoint and starts afresh otherwise)"
        )
    if config.threads:
        torch.set_num_threads(config.threads)
    out = check_output_folder(config.out, "out_dir")
    spec = config.model
    if spec.backbone_path and not spec.init_from:
        # Before the run folder is touched: a backbone that cannot be had offline is one line, not a
        # transformers traceback after the folder was prepared.
        locate_backbone(spec.backbone_path, spec.gguf_file, what="model.backbone_path")
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = None
    if resume is not None:
        ckpt_path = out / "checkpoints" / "last.ckpt" if str(resume) in ("last", "auto") else Path(resume)
        if not ckpt_path.is_file():
            if str(resume) == "auto":
                ckpt_path = None
            else:
                raise CheckpointError(f"cannot resume: no checkpoint at {ckpt_path}")
    is_rank0 = launch_rank() == 0
    # Rank 0 stands for the run: the other ranks of a DDP run share its folder, lock and outputs.
    with RunLock(out) if is_rank0 else contextlib.nullcontext():
        if is_rank0:
            notes = prepare_run_folder(
                out, fresh=ckpt_path is None, overwrite=overwrite, outputs=RUN_OUTPUTS, marks=RUN_MARKS
            )
            for note in notes:
                print(f"[flow-omni] {note}")
        return _train(config, ckpt_path, is_rank0, callbacks)


def _resolve_precision(config: TrainConfig, ckpt_path: Path | None, is_rank0: bool) -> TrainConfig:
    """``config`` with ``precision: auto`` resolved, before anything is written, so that config.yaml and
    the checkpoints record the precision the run trained in. A resumed run keeps the precision it
    started in, where ``auto`` on this machine might choose another; a precision named outright is
    used as named. Rank 0 prints a note where bf16 is not native, or what the resume chose."""
    here = config.with_precision_resolved()
    started = None if ckpt_path is None else _checkpoint_precision(ckpt_path, config.out)
    say = print if is_rank0 else (lambda *_: None)
    if config.precision == AUTO and started is not None and started != here.precision:
        say(
            f"[flow-omni] resuming in precision {started}, the one the run started in "
            f"(auto would choose {here.precision} here)"
        )
        here = dataclasses.replace(config, precision=started)
    elif started is not None and started != here.precision:
        say(f"[flow-omni] resuming a run that trained in {started} in {here.precision}, as asked")
    note = precision_note(here.precision, here.accelerator)
    if note:
        say(f"[flow-omni] {note}")
    return here


def _checkpoint_precision(ckpt_path: Path, out: Path) -> str | None:
    """The precision the run in ``ckpt_path`` trained in: its checkpoint's config, or for a checkpoint
    written before checkpoints kept one, the config.yaml of the run folder it lies in; else None."""
    from flow_omni.training.checkpoint_io import read_training_checkpoint
    from flow_omni.training.module import TRAIN_CONFIG_KEY

    text = read_training_checkpoint(ckpt_path, mmap=True).get(TRAIN_CONFIG_KEY)
    folder_config = out / "config.yaml"
    if not isinstance(text, str) and ckpt_path.resolve().parent.parent == out.resolve() and folder_config.is_file():
        text = folder_config.read_text()
    # Only the precision is read: a config of another version of the library may not load as a whole.
    settings = yaml.safe_load(text) if isinstance(text, str) else None
    precision = settings.get("precision") if isinstance(settings, dict) else None
    return precision if isinstance(precision, str) else None


def _train(config: TrainConfig, ckpt_path: Path | None, is_rank0: bool, callbacks) -> TrainResult:
    # Lightning (flow_omni[train]) and our modules built on it are imported here, not at the top, so that
    # importing flow_omni.training (configs, build_model, quick_train) works without it.
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from flow_omni.training.checkpoint_io import AtomicCheckpointIO, check_resumable
    from flow_omni.training.clock import TrainClock
    from flow_omni.training.datamodule import FlowOmniDataModule
    from flow_omni.training.module import FlowOmniModule, read_loss_log
    from flow_omni.training.progress import StepProgress, lightning_tip_dropped

    config = _resolve_precision(config, ckpt_path, is_rank0)
    out = config.out
    ckpt_dir = out / "checkpoints"
    L.seed_everything(config.seed, workers=True, verbose=False)
    model = build_model(config)
    data = FlowOmniDataModule(model, config.data, seed=config.seed)
    data.setup("fit")
    report_path = out / "data_report.txt"
    if is_rank0:
        data.report.attach(report_path, keep_existing=ckpt_path is not None)
    if not config.model.init_from:
        # A new model's token statistics are a function of the training data alone, so every rank
        # (and a resumed run) computes the same ones; a fine-tune keeps those of its checkpoint.
        mels = data.speech_mels(config.stats_max_files)
        model.fit_speech_stats(mels=mels)
        if model.speech.needs_fit:
            # e.g. a discrete model's codebooks, in the same normalisation: fitted on what the model
            # speaks alone, since codes spent on input voices are codes its speech cannot use
            # (benchmarks/token_ceiling.py measured what the two choices hold).
            spoken = data.speech_mels(config.codebook_max_files, spoken_only=True)
            model.fit_speech_head([model.speech_tokenizer.encode_mel(m) for m in spoken])
        if model.encoder.needs_fit:  # discrete input units: a codebook over the frozen encoder's outputs
            model.encoder.fit_units(data.encoder_features(), progress=config.progress)
    if not is_rank0:  # rank 0 has written what every rank found so far; each appends what its batches meet
        data.report.attach(report_path, write=False)
    counts = set_trainable(model, config)
    module = FlowOmniModule(model, config)
    if ckpt_path is not None:
        check_resumable(module, ckpt_path)  # before config.yaml is replaced by the one that does not fit
    if is_rank0:
        atomic_write_text(out / "config.yaml", config.to_yaml())
    module.loss_log = out / "train_log.jsonl"  # a fresh run starts without one (prepare_run_folder)

    loggers = []
    if "csv" in config.loggers:
        loggers.append(CSVLogger(out, name="logs", version="csv"))
    if "tensorboard" in config.loggers:
        loggers.append(TensorBoardLogger(out, name="logs", version="tensorboard", default_hp_metric=False))
    extra_callbacks, callbacks = (
        callbacks,
        [
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename="step{step:07d}",
                auto_insert_metric_name=False,
                every_n_train_steps=config.checkpoint_every_steps,
                save_top_k=1,
                save_last=True,
                save_on_train_epoch_end=False,
                # Overwrite (atomically, AtomicCheckpointIO) a file of the same name, e.g. after resuming
                # from an older checkpoint, instead of writing "last-v1.ckpt" beside it.
                enable_version_counter=False,
            )
        ],
    )
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if config.progress:
        callbacks.append(StepProgress())
    clock = TrainClock()
    callbacks.append(clock)
    callbacks += list(extra_callbacks)
    has_val = bool(data.valid_entries)
    with lightning_tip_dropped():  # printed when the Trainer is built
        trainer = L.Trainer(
            accelerator=config.accelerator,
            devices=_devices(config),
            num_nodes=config.num_nodes,
            strategy=_strategy(config, model),
            precision=config.precision,
            max_steps=config.max_steps,
            max_epochs=-1,
            accumulate_grad_batches=config.accumulate_grad_batches,
            val_check_interval=config.val_every_steps if has_val else None,
            check_val_every_n_epoch=None if has_val else 1,
            limit_val_batches=None if has_val else 0,
            log_every_n_steps=config.log_every_steps,
            logger=loggers or False,
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=False,  # StepProgress instead: Lightning's counts batches per (open-ended) epoch
            enable_model_summary=False,
            use_distributed_sampler=False,  # our batch sampler shards global batches itself
            num_sanity_val_steps=0,
            deterministic=False,
            default_root_dir=out,
        )
    if trainer.is_global_zero:
        summary = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items() if v)
        print(
            f"[flow-omni] training {summary} of {model.num_parameters() / 1e6:.2f}M parameters; "
            f"{len(data.train_entries)} train / {len(data.valid_entries)} valid entries; "
            f"{len(data.report)} skipped (see {report_path})"
        )
    before = None
    # A run that scores before and after spends minutes outside the step bar: say which part runs, also
    # with progress off (the stage lines are not bars).
    stages = _eval_stages() if config.eval is not None and config.eval.manifests and trainer.is_global_zero else None
    if stages is not None and ckpt_path is None:
        stages.start("before", _eval_scope(config))
        before = _evaluate(model, config, stages, out / "wavs" / "before")
        atomic_write_text(out / "eval_before.json", json.dumps(before, indent=2))
        model.train()
    elif stages is not None:
        stages.skip("before", "scored when this run started (eval_before.json)")
    if stages is not None:
        stages.start("train", f"to step {config.max_steps}")
    t0 = time.perf_counter()
    clock.start(t0)
    with warnings.catch_warnings():
        # A batch whose items were all skipped returns None on purpose (FlowOmniModule.training_step).
        warnings.filterwarnings("ignore", message="`training_step` returned `None`")
        # Known noise: Lightning's own use of a torch API it deprecated, and its advice to log less
        # often than once per epoch (a run here is bounded by steps; short epochs are normal).
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
        warnings.filterwarnings("ignore", message="The number of training batches .* is smaller than the logging")
        with bf16_arithmetic(config.precision, config.accelerator):
            trainer.fit(module, datamodule=data, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
    seconds = time.perf_counter() - t0
    model_dir = adapter_dir = None
    # The time in fit before a resume, which the checkpoint kept; not known for a checkpoint written without it.
    seconds_before = 0.0 if ckpt_path is None else (clock.before if clock.restored else None)
    run_seconds = None if seconds_before is None else seconds_before + seconds
    record = training_record(config, trainer.global_step, run_seconds, len(data.train_entries))
    if trainer.is_global_zero:
        model.eval()
        if config.lora is not None:
            adapter_dir = save_adapter(model, out / "adapter")
            merge_lora(model)
        model_dir = model.save_pretrained(out / "model", training=record)
    eval_report = None
    if stages is not None:
        if before is None and (out / "eval_before.json").exists():  # a resumed run: the first part measured it
            before = json.loads((out / "eval_before.json").read_text())
        if before is not None:
            stages.expect("after", stages.measured("before"))  # the same parts as before training
            stages.start("after", _eval_scope(config))
            after = _evaluate(model, config, stages, out / "wavs" / "after")
            eval_report = write_eval_report(out, before, after)
            # The card was written before this evaluation (the weights are safe on disk whatever it does).
            card = heldout_rows(after, before)
            write_model_card(model_dir, model.config.to_dict(), model.parameter_counts(), record, card)
        stages.finish()
    history = read_loss_log(module.loss_log) if module.loss_log.exists() else []
    last = ckpt_dir / "last.ckpt"
    return TrainResult(
        out,
        model_dir,
        adapter_dir,
        last if last.exists() else None,
        trainer.global_step,
        seconds,
        history,
        data.report.lines,
        eval_report,
        seconds_before,
    )


def training_record(config: TrainConfig, steps: int, seconds: float | None, entries: int) -> TrainingRecord:
    """What the model card says about a run of ``config`` that reached ``steps``."""
    return TrainingRecord(
        steps=steps,
        batch_size=config.data.batch_size * config.accumulate_grad_batches,
        learning_rate=config.optim.lr,
        seed=config.seed,
        train_manifests=tuple(config.data.train),
        train_entries=entries,
        task_weights=dict(config.data.task_weights),
        trainable=tuple(config.trainable),
        lora_rank=config.lora.r if config.lora is not None else None,
        init_from=config.model.init_from,
        p_augment=config.data.p_augment,
        seconds=seconds,
    )


def _evaluate(
    model: FlowOmni, config: TrainConfig, stages: StageReporter | None = None, wav_dir: Path | None = None
) -> dict:
    spec = config.eval
    return evaluate_heldout(
        model,
        spec.manifests,
        spec.conditions,
        max_items=spec.max_items,
        tts=spec.tts,
        seed=spec.seed,
        on_part=None if stages is None else stages.note,
        wav_dir=wav_dir,
        sample_wavs=spec.sample_wavs,
    )


def _eval_stages() -> StageReporter:
    """The three stages of a run that scores held-out sets before and after training."""
    return StageReporter(
        "train",
        [
            Stage("before", "scoring before training"),
            Stage("train", "training"),
            Stage("after", "scoring after training"),
        ],
    )


def _eval_scope(config: TrainConfig) -> str:
    spec = config.eval
    tasks = f"ASR under {len(spec.conditions)} conditions" + (", TTS" if spec.tts else "")
    return f"{', '.join(spec.manifests)}: {tasks}, {spec.max_items} items at most"


__all__ = [
    "TrainResult",
    "build_model",
    "recipe_path",
    "set_trainable",
    "train",
    "train_special_token_rows",
    "training_record",
]
