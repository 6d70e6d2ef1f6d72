"""The ``flow-omni`` console command.

Each job a user runs from a shell is a subcommand with its own ``--help``, listed once in
:data:`COMMANDS`. Errors that come from bad input (a missing file, a wrong sample rate, an unknown
config key) are printed as one line and exit with status 2 instead of a traceback; ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable
from typing import NamedTuple

from flow_omni.cli import audio, bench, data, hub, roundtrip, speak, train
from flow_omni.errors import FlowOmniError


class Group(NamedTuple):
    """A command with subcommands (``flow-omni manifest validate``)."""

    help: str
    commands: dict[str, Entry]


#: A command: (run it with the parsed arguments, add its arguments to its parser). The run function's
#: docstring is the command's help: its first paragraph the one-line help, the rest the description.
Command = tuple[Callable[[argparse.Namespace], None], Callable[[argparse.ArgumentParser], None]]
Entry = Command | Group

#: Every command of ``flow-omni``, in the order ``--help`` lists them.
COMMANDS: dict[str, Entry] = {
    "demo": (bench.demo_command, bench.demo_arguments),
    "roundtrip": (roundtrip.roundtrip_command, roundtrip.roundtrip_arguments),
    "mel": (audio.mel_command, audio.mel_arguments),
    "augment": (audio.augment_command, audio.augment_arguments),
    "vocode": (audio.vocode_command, audio.vocode_arguments),
    "train": (train.train_command, train.train_arguments),
    "train-vocoder": (train.train_vocoder_command, train.train_vocoder_arguments),
    "corpus": (data.corpus_command, data.corpus_arguments),
    "manifest": Group(
        "import corpora into JSONL manifests and validate manifests",
        {
            "validate": (data.manifest_validate_command, data.manifest_validate_arguments),
            "import": (data.manifest_import_command, data.manifest_import_arguments),
        },
    ),
    "speak": (speak.speak_command, speak.speak_arguments),
    "answer": (speak.answer_command, speak.answer_arguments),
    "transcribe": (speak.transcribe_command, speak.transcribe_arguments),
    "push": (hub.push_command, hub.push_arguments),
    "bench": Group(
        "benchmarks that train and evaluate models (robustness)",
        {
            "robustness": (bench.robustness_command, bench.robustness_arguments),
        },
    ),
}


def _add(sub: argparse._SubParsersAction, name: str, entry: Entry) -> None:
    if isinstance(entry, Group):
        parser = sub.add_parser(name, help=entry.help)
        inner = parser.add_subparsers(dest=f"{name}_command", required=True)
        for child, child_entry in entry.commands.items():
            _add(inner, child, child_entry)
        return
    run, add_arguments = entry
    help_text, _, description = inspect.getdoc(run).partition("\n\n")
    parser = sub.add_parser(name, help=help_text, description=description or None)
    add_arguments(parser)
    parser.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flow-omni", description="Speech LLMs with continuous speech tokens.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    for name, entry in COMMANDS.items():
        _add(sub, name, entry)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except FlowOmniError as exc:
        if args.debug:
            raise
        print(f"flow-omni {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


__all__ = ["COMMANDS", "build_parser", "main"]
