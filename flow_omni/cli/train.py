"""``flow-omni`` commands that train: ``train`` (a FlowOmni from a recipe) and ``train-vocoder`` (a Vocos)."""

from __future__ import annotations

import argparse

from flow_omni.config import parse_overrides
from flow_omni.training.config import TrainConfig
from flow_omni.training.train import recipe_path, train


def train_command(args: argparse.Namespace) -> None:
    """train a FlowOmni from a YAML recipe (Lightning; CPU/GPU, torchrun, SLURM)

    Train from a YAML config or a built-in recipe name (stage1, stage2, stage2_lora, noisy_finetune, …).
    Runs the same under `torchrun --nproc_per_node N` and `srun`.
    """
    cfg = TrainConfig.load(recipe_path(args.config)).merged(parse_overrides(args.set or []))
    if args.out:
        cfg = cfg.merged({"out_dir": args.out})
    if args.no_progress:
        cfg = cfg.merged({"progress": False})
    result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if result.model_dir is None:  # not rank 0
        return
    first = result.history[0]["loss"] if result.history else float("nan")
    last = result.history[-1]["loss"] if result.history else float("nan")
    print(f"\ntrained {result.steps} steps in {result.seconds:.1f} s; loss {first:.3f} -> {last:.3f}")
    print(f"model:       {result.model_dir}")
    if result.adapter_dir:
        print(f"adapter:     {result.adapter_dir}")
    print(f"checkpoint:  {result.last_checkpoint}  (resume with --resume last)")
    print(f"logs:        {result.out_dir / 'logs'}  (CSV + TensorBoard), per-step losses in train_log.jsonl")
    if result.data_report:
        print(f"skipped {len(result.data_report)} entries or items: {result.out_dir / 'data_report.txt'}")
    if result.eval_report:
        print(f"before/after report: {result.eval_report}")


def train_arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("--config", required=True, help="YAML file or built-in recipe name")
    t.add_argument(
        "--set",
        nargs="*",
        action="extend",
        metavar="KEY=VALUE",
        help="override config entries, e.g. --set max_steps=50 data.batch_size=4",
    )
    t.add_argument("--out", help="output directory (overrides out_dir)")
    t.add_argument(
        "--resume",
        nargs="?",
        const="last",
        help="resume from a checkpoint: 'last' (default when given without a value), 'auto' "
        "(last if it exists, else start fresh) or a .ckpt path",
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an output directory that holds an earlier run, deleting its checkpoints, "
        "logs and model (without it such a directory is refused)",
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def train_vocoder_command(args: argparse.Namespace) -> None:
    """train a Vocos vocoder on a corpus (vocos' own GAN losses, Lightning)

    Train a Vocos on the audio of JSONL manifests; exports a folder that `--vocoder DIR` and
    Vocoder.from_pretrained load. The recipe 'vocoder' is the full 24 kHz size.
    """
    # Imported here: the vocoder trainer imports Lightning and vocos' discriminators at module level,
    # which the other commands (and `flow-omni --help`) must not pay for.
    from flow_omni.training.vocoder import VocoderTrainConfig, train_vocoder

    cfg = VocoderTrainConfig.load(recipe_path(args.config))
    changes = {}
    if args.out:
        changes["out_dir"] = args.out
    if args.manifest:
        changes["train_manifests"] = list(args.manifest)
    if args.val_manifest is not None:
        changes["val_manifests"] = list(args.val_manifest)
    elif args.manifest:
        # The recipe's validation set belongs to its own training set (data/val.jsonl); it says nothing
        # about the audio given here, and is usually not there at all.
        changes["val_manifests"] = []
        print("[flow-omni] no --val-manifest: training without validation")
    if args.steps is not None:
        changes["max_steps"] = args.steps
    cfg = cfg.merged(changes)
    out = train_vocoder(cfg, progress=not args.no_progress, resume=args.resume, overwrite=args.overwrite)
    print(f"vocoder: {out}  (use it with --vocoder {out})")
    report = cfg.out / "data_report.txt"
    skipped = report.read_text().splitlines() if report.is_file() else []
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s): {report}")


def train_vocoder_arguments(tv: argparse.ArgumentParser) -> None:
    tv.add_argument("--config", default="vocoder", help="YAML file or built-in recipe name (default: vocoder)")
    tv.add_argument("--manifest", nargs="+", help="train manifests (override train_manifests)")
    tv.add_argument(
        "--val-manifest",
        nargs="*",
        help="validation manifests (override val_manifests; none: no validation). With --manifest and "
        "without this, the run has no validation",
    )
    tv.add_argument("--out", help="output directory (override out_dir)")
    tv.add_argument("--steps", type=int, help="override max_steps")
    tv.add_argument("--resume", nargs="?", const="last", help="resume: 'last' or a .ckpt path")
    tv.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an output directory that holds an earlier run, deleting its checkpoints, logs and export",
    )
    tv.add_argument("--no-progress", action="store_true")
