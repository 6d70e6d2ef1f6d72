"""``flow-omni`` subcommands for data and training: corpus, manifest, train, train-vocoder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_train(args: argparse.Namespace) -> None:
    from flow_omni.config import parse_overrides
    from flow_omni.training.config import TrainConfig
    from flow_omni.training.train import recipe_path, train

    cfg = TrainConfig.load(recipe_path(args.config)).merged(parse_overrides(args.set or []))
    if args.out:
        cfg = cfg.merged({"out_dir": args.out})
    if args.no_progress:
        cfg = cfg.merged({"progress": False})
    result = train(cfg, resume=args.resume)
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
        print(f"skipped {len(result.data_report)} manifest line(s): {result.out_dir / 'data_report.txt'}")
    if result.eval_report:
        print(f"before/after report: {result.eval_report}")


def _cmd_manifest_validate(args: argparse.Namespace) -> None:
    from flow_omni.data.validate import validate_manifest

    rep = validate_manifest(args.manifest, on_error=args.on_error, check_audio="full" if args.full else True,
                            max_duration=args.max_seconds, progress=not args.quiet)
    print(rep.summary())
    if args.write_clean:
        from flow_omni.data.manifest import write_manifest

        write_manifest(args.write_clean, rep.entries)
        print(f"{len(rep.entries)} good entries -> {args.write_clean}")
    if rep.problems:
        sys.exit(1)


def _cmd_manifest_import(args: argparse.Namespace) -> None:
    from flow_omni.data.importers import import_librispeech, import_wav_txt

    if args.kind == "wav-txt":
        res = import_wav_txt(args.root, out=args.output, progress=not args.quiet)
    else:
        res = import_librispeech(args.root, out=args.output, style=args.kind if args.kind != "libri" else "auto",
                                 progress=not args.quiet)
    print(res.summary())
    print(f"manifest -> {args.output}")


def _cmd_train_vocoder(args: argparse.Namespace) -> None:
    from flow_omni.training.train import recipe_path
    from flow_omni.training.vocoder import VocoderTrainConfig, train_vocoder

    cfg = VocoderTrainConfig.load(recipe_path(args.config))
    changes = {}
    if args.out:
        changes["out_dir"] = args.out
    if args.manifest:
        changes["train_manifests"] = list(args.manifest)
    if args.steps:
        changes["max_steps"] = args.steps
    cfg = cfg.merged(changes)
    out = train_vocoder(cfg, progress=not args.no_progress, resume=args.resume)
    print(f"vocoder: {out}  (use it with --vocoder {out})")


def _cmd_corpus(args: argparse.Namespace) -> None:
    from flow_omni.data.corpus import CorpusConfig, build_corpus

    cfg = CorpusConfig.load(args.config) if args.config else CorpusConfig()
    changes = {k: v for k, v in (("seed", args.seed), ("n_sentences", args.sentences), ("n_qa", args.qa),
                                 ("n_interleaved", args.interleaved)) if v is not None}
    cfg = cfg.merged(changes)
    report = build_corpus(cfg, args.out, progress=not args.quiet, overwrite=args.overwrite)
    print(report)
    out = Path(args.out)
    print("manifests: " + ", ".join(str(out / f"{s}.jsonl") for s in ("train", "valid", "test", "test_unseen_voices")))


def add_commands(sub) -> None:
    t = sub.add_parser("train", help="train a FlowOmni from a YAML recipe (Lightning; CPU/GPU, torchrun, SLURM)",
                       description="Train from a YAML config or a built-in recipe name (stage1, stage2, stage2_lora, "
                       "noisy_finetune, …). Runs the same under `torchrun --nproc_per_node N` and `srun`.")
    t.add_argument("--config", required=True, help="YAML file or built-in recipe name")
    t.add_argument("--set", nargs="*", action="extend", metavar="KEY=VALUE",
                   help="override config entries, e.g. --set max_steps=50 data.batch_size=4")
    t.add_argument("--out", help="output directory (overrides out_dir)")
    t.add_argument("--resume", nargs="?", const="last",
                   help="resume from a checkpoint: 'last' (default when given without a value), 'auto' "
                   "(last if it exists, else start fresh) or a .ckpt path")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    t.set_defaults(func=_cmd_train)

    tv = sub.add_parser("train-vocoder", help="train a Vocos vocoder on a corpus (vocos' own GAN losses, Lightning)",
                        description="Train a Vocos on the audio of JSONL manifests; exports a folder that "
                        "`--vocoder DIR` and Vocoder.from_pretrained load. The recipe 'vocoder' is the full 24 kHz size.")
    tv.add_argument("--config", default="vocoder", help="YAML file or built-in recipe name (default: vocoder)")
    tv.add_argument("--manifest", nargs="+", help="train manifests (override train_manifests)")
    tv.add_argument("--out", help="output directory (override out_dir)")
    tv.add_argument("--steps", type=int, help="override max_steps")
    tv.add_argument("--resume", nargs="?", const="last", help="resume: 'last' or a .ckpt path")
    tv.add_argument("--no-progress", action="store_true")
    tv.set_defaults(func=_cmd_train_vocoder)

    c = sub.add_parser("corpus", help="build the offline synthetic speech corpus (espeak-ng: sentences, spoken QA, "
                       "interleaved documents)",
                       description="Synthesise WAVs (24 kHz) and JSONL manifests (train / valid / test / "
                       "test_unseen_voices). Deterministic for a seed; rerun the same command to resume.")
    c.add_argument("--out", default="data/synth", help="output folder (default: data/synth)")
    c.add_argument("--config", help="CorpusConfig as YAML/JSON")
    c.add_argument("--seed", type=int)
    c.add_argument("--sentences", type=int, help="number of plain sentences")
    c.add_argument("--qa", type=int, help="number of spoken question/answer pairs")
    c.add_argument("--interleaved", type=int, help="number of interleaved text/speech documents")
    c.add_argument("--overwrite", action="store_true", help="replace a corpus built with another config")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=_cmd_corpus)

    m = sub.add_parser("manifest", help="import corpora into JSONL manifests and validate manifests")
    msub = m.add_subparsers(dest="manifest_command", required=True)
    v = msub.add_parser("validate", help="check every line: files exist and decode, text is not empty, …")
    v.add_argument("manifest")
    v.add_argument("--on-error", choices=["skip", "stop"], default="skip",
                   help="skip: report every bad line (exit 1 if any); stop: fail at the first")
    v.add_argument("--full", action="store_true", help="decode every file completely (slower, finds mid-file damage)")
    v.add_argument("--max-seconds", type=float, help="report entries longer than this")
    v.add_argument("--write-clean", help="write the good entries to this manifest")
    v.add_argument("--quiet", action="store_true")
    v.set_defaults(func=_cmd_manifest_validate)
    i = msub.add_parser("import", help="make a manifest from a LibriSpeech/LibriTTS folder or a wav+txt folder")
    i.add_argument("kind", choices=["libri", "librispeech", "libritts", "wav-txt"])
    i.add_argument("root")
    i.add_argument("-o", "--output", required=True, help="manifest to write (paths relative to its folder)")
    i.add_argument("--quiet", action="store_true")
    i.set_defaults(func=_cmd_manifest_import)


__all__ = ["add_commands"]
