"""``flow-omni`` commands for data: ``corpus`` (the synthetic corpus), ``manifest validate`` and ``manifest import``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flow_omni.checks import check_number, check_output_file
from flow_omni.data.corpus import CorpusConfig, build_corpus
from flow_omni.data.dataset import MAX_SECONDS
from flow_omni.data.importers import import_librispeech, import_wav_txt
from flow_omni.data.manifest import write_manifest
from flow_omni.data.validate import validate_manifest


def corpus_command(args: argparse.Namespace) -> None:
    """build the offline synthetic speech corpus (espeak-ng: sentences, spoken QA, interleaved documents)

    Synthesise WAVs (24 kHz) and JSONL manifests (train / valid / test / test_unseen_voices).
    Deterministic for a seed; rerun the same command to resume.
    """
    cfg = CorpusConfig.load(args.config) if args.config else CorpusConfig()
    changes = {
        k: v
        for k, v in (
            ("seed", args.seed),
            ("n_sentences", args.sentences),
            ("n_qa", args.qa),
            ("n_interleaved", args.interleaved),
        )
        if v is not None
    }
    report = build_corpus(cfg.merged(changes), args.out, progress=not args.quiet, overwrite=args.overwrite)
    print(report)
    out = Path(args.out)
    print("manifests: " + ", ".join(str(out / f"{s}.jsonl") for s in ("train", "valid", "test", "test_unseen_voices")))


def corpus_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--out", default="data/synth", help="output folder (default: data/synth)")
    c.add_argument("--config", help="CorpusConfig as YAML/JSON")
    c.add_argument("--seed", type=int)
    c.add_argument("--sentences", type=int, help="number of plain sentences")
    c.add_argument("--qa", type=int, help="number of spoken question/answer pairs")
    c.add_argument("--interleaved", type=int, help="number of interleaved text/speech documents")
    c.add_argument("--overwrite", action="store_true", help="replace a corpus built with another config")
    c.add_argument("--quiet", action="store_true")


def manifest_validate_command(args: argparse.Namespace) -> None:
    """check every line: files exist and decode, text is not empty, …"""
    if args.write_clean:
        check_output_file(args.write_clean, "--write-clean")
    check_number(args.max_seconds, "--max-seconds (0: no limit)", low=0.0)
    rep = validate_manifest(
        args.manifest,
        on_error=args.on_error,
        check_audio="full" if args.full else True,
        max_duration=args.max_seconds or None,
        progress=not args.quiet,
    )
    print(rep.summary())
    if args.write_clean:
        write_manifest(args.write_clean, rep.entries)
        print(f"{len(rep.entries)} good entries -> {args.write_clean}")
    if rep.problems:
        sys.exit(1)


def manifest_validate_arguments(v: argparse.ArgumentParser) -> None:
    v.add_argument("manifest")
    v.add_argument(
        "--on-error",
        choices=["skip", "stop"],
        default="skip",
        help="skip: report every bad line (exit 1 if any); stop: fail at the first",
    )
    v.add_argument("--full", action="store_true", help="decode every file completely (slower, finds mid-file damage)")
    v.add_argument(
        "--max-seconds",
        type=float,
        default=MAX_SECONDS,
        help=f"report entries longer than this, which training skips (default {MAX_SECONDS:g}: training's "
        "data.max_seconds default; 0: no limit)",
    )
    v.add_argument("--write-clean", help="write the good entries to this manifest")
    v.add_argument("--quiet", action="store_true")


def manifest_import_command(args: argparse.Namespace) -> None:
    """make a manifest from a LibriSpeech/LibriTTS folder or a wav+txt folder"""
    check_output_file(args.output, "-o")
    if args.kind == "wav-txt":
        res = import_wav_txt(args.root, out=args.output, progress=not args.quiet)
    else:
        res = import_librispeech(
            args.root, out=args.output, style=args.kind if args.kind != "libri" else "auto", progress=not args.quiet
        )
    print(res.summary())
    print(f"manifest -> {args.output}")


def manifest_import_arguments(i: argparse.ArgumentParser) -> None:
    i.add_argument("kind", choices=["libri", "librispeech", "libritts", "wav-txt"])
    i.add_argument("root")
    i.add_argument("-o", "--output", required=True, help="manifest to write (paths relative to its folder)")
    i.add_argument("--quiet", action="store_true")
