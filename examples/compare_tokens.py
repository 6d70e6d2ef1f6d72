"""Continuous vs discrete speech tokens on your own data: train both on the same budget, score both, print a table.

    python examples/compare_tokens.py --train my/train.jsonl --test my/test.jsonl --out runs/compare

A manifest is JSONL, one utterance a line: {"id", "audio", "text"} (`flow-omni manifest import` writes one
from LibriSpeech or from a folder of wav + txt files). Both models start from the same recipe (`learn`: the
tiny model on the frozen Whisper tiny.en encoder; `quickstart`: a conv encoder trained from scratch) and
differ only in the speech head: a flow-matching head on continuous tokens, or a softmax over k-means codes
of the same tokens. Each is scored on the test manifest: ASR CER/WER under clean and noisy input, and
TTS (text -> speech) log-mel distance to the recording. Rerunning the command resumes or reuses the runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flow_omni import FlowOmni
from flow_omni.bench.config import VariantSpec
from flow_omni.config import parse_overrides
from flow_omni.data.manifest import read_manifest
from flow_omni.errors import FlowOmniError
from flow_omni.eval.report import metrics_table
from flow_omni.eval.robustness import evaluate_model
from flow_omni.training import TrainConfig, recipe_path, train


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", nargs="+", required=True, help="training manifests")
    p.add_argument("--test", required=True, help="held-out manifest: utterances to transcribe and to speak")
    p.add_argument("--out", default="runs/compare", help="one training run per variant in OUT/<variant>")
    p.add_argument("--recipe", default="learn", help="built-in recipe or YAML both variants start from")
    p.add_argument("--max-steps", type=int, default=3000, help="training steps per variant (the equal budget)")
    p.add_argument("--codebook-size", type=int, default=256, help="k-means codes (K)")
    p.add_argument("--items", type=int, default=32, help="test utterances scored")
    p.add_argument("--conditions", nargs="+", default=["clean", "babble@5", "white@0"], help="input conditions")
    p.add_argument("--max-positions", type=int, default=300, help="generated positions per answer at most")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more training settings")
    args = p.parse_args(argv)

    test = read_manifest(args.test)[: args.items]
    variants = [
        VariantSpec("continuous"),
        VariantSpec("kmeans", tokens="kmeans", quantizer={"codebook_size": args.codebook_size}),
    ]
    rows = []
    for variant in variants:
        config = TrainConfig.load(recipe_path(args.recipe)).merged(
            {
                "out_dir": f"{args.out}/{variant.name}",
                "max_steps": args.max_steps,
                "model": {"overrides": variant.model_overrides()},
                "data": {"train": args.train, "valid": []},
            }
        )
        result = train(config.merged(parse_overrides(args.set)), resume="auto")
        model = FlowOmni.from_pretrained(result.model_dir)
        rows += evaluate_model(
            model,
            test,
            [],  # spoken QA needs questions with answers; pass a QA manifest's entries here to score it too
            args.conditions,
            tasks=("asr", "tts"),
            max_new_positions=args.max_positions,
            label=(variant.name, 0),
        )
    print(f"\n{len(test)} test utterances from {args.test}; {args.max_steps} training steps each\n")
    print(metrics_table(rows))


if __name__ == "__main__":
    try:
        main()
    except FlowOmniError as exc:  # bad input (a missing file, a misspelt setting): one line, not a traceback
        print(f"{Path(__file__).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
