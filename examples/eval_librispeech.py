"""Score a trained model on LibriSpeech test-clean (or any LibriSpeech or LibriTTS split): ASR under noise.

    python examples/eval_librispeech.py --model runs/learn/model --config examples/librispeech_test_clean.yaml

The first run makes the corpus' manifest with `flow-omni manifest import libri CORPUS -o MANIFEST` (the
same command you can run yourself); later runs read it. The settings are in the YAML file; any of them can
be changed with --set key=value.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from flow_omni import FlowOmni
from flow_omni.cli import main as flow_omni_cli
from flow_omni.config import Config, parse_overrides
from flow_omni.data.manifest import read_manifest
from flow_omni.errors import FlowOmniError
from flow_omni.eval.report import metrics_table
from flow_omni.eval.robustness import evaluate_model


@dataclasses.dataclass
class LibriEval(Config):
    """The settings: every key of librispeech_test_clean.yaml (a missing or misspelt key is an error)."""

    corpus: str
    manifest: str
    max_items: int
    max_seconds: float
    conditions: list[str]
    tasks: list[str]
    max_new_positions: int


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a trained model folder")
    p.add_argument("--config", default=str(Path(__file__).with_name("librispeech_test_clean.yaml")))
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="change settings of the config")
    args = p.parse_args(argv)
    cfg = LibriEval.load(args.config).merged(parse_overrides(args.set))

    if not Path(cfg.manifest).is_file():
        if flow_omni_cli(["manifest", "import", "libri", cfg.corpus, "-o", cfg.manifest]) != 0:
            raise SystemExit(2)  # the command has printed why
    entries = [e for e in read_manifest(cfg.manifest) if e.duration is None or e.duration <= cfg.max_seconds]
    test = entries[: cfg.max_items]
    model = FlowOmni.from_pretrained(args.model)
    rows = evaluate_model(
        model, test, [], cfg.conditions, tasks=cfg.tasks, max_new_positions=cfg.max_new_positions, label=("model", 0)
    )
    print(f"\n{args.model} on {len(test)} utterances of {cfg.corpus} (at most {cfg.max_seconds:g} s each)\n")
    print(metrics_table(rows))


if __name__ == "__main__":
    try:
        main()
    except FlowOmniError as exc:  # bad input (a missing file, a misspelt setting): one line, not a traceback
        print(f"{Path(__file__).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
