"""Fine-tune a trained model on your own noisy recordings and score it before and after.

    python examples/finetune_noisy.py --model runs/learn/model --train noisy/train.jsonl --test noisy/test.jsonl

This is the `noisy_finetune` recipe: training continues from --model with noise, rate, pitch and room
augmentation on the input side only (what the model says stays as recorded), and the test manifest is
scored before and after under each condition, on the same noisy audio both times (the noise is seeded per
utterance). "clean" means the test audio as recorded, noisy or not. In --out it writes eval_report.md,
eval.json, eval_cer.png and model/, whose README.md model card carries the numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flow_omni.config import Whole, parse_overrides
from flow_omni.errors import FlowOmniError
from flow_omni.training import TrainConfig, recipe_path, train


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the trained model folder to start from")
    p.add_argument("--train", nargs="+", required=True, help="manifests of your noisy recordings")
    p.add_argument("--test", required=True, help="held-out manifest, scored before and after")
    p.add_argument("--out", default="runs/noisy_finetune")
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--items", type=int, default=32, help="test utterances scored")
    p.add_argument("--conditions", nargs="+", default=["clean", "white@10", "babble@5", "babble@0"])
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more training settings")
    args = p.parse_args(argv)

    config = TrainConfig.load(recipe_path("noisy_finetune")).merged(
        {
            "out_dir": args.out,
            "max_steps": args.max_steps,
            "model": {"init_from": args.model},
            "data": {"train": args.train, "valid": []},
            # Whole: your test set replaces the recipe's test sets instead of joining them.
            "eval": {"manifests": Whole(test=args.test), "conditions": args.conditions, "max_items": args.items},
        }
    )
    config = config.merged(parse_overrides(args.set))
    result = train(config, resume="auto")
    print(result.eval_report.read_text())
    print(f"report: {result.eval_report}\nmodel:  {result.model_dir}")


if __name__ == "__main__":
    try:
        main()
    except FlowOmniError as exc:  # bad input (a missing file, a misspelt setting): one line, not a traceback
        print(f"{Path(__file__).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
