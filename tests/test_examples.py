"""The scripts in examples/ run as `python examples/<name>.py …` does, on a tiny corpus, in seconds."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest
from conftest import write_tiny_corpus

from flow_omni import FlowOmni, FlowOmniConfig
from flow_omni.audio.io import load_audio, save_audio
from flow_omni.audio.synth import synth_corpus
from flow_omni.data.manifest import read_manifest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: Training settings that make a run take seconds (the examples' defaults are for real data).
QUICK = ["data.batch_size=4", "optim.warmup_steps=2", "progress=false", "loggers=[csv]", "threads=1"]


def run_example(name: str, *args: str, monkeypatch) -> None:
    """Run examples/<name> as a script (``__main__``) with these arguments."""
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *map(str, args)])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def model_dir(corpus, tmp_path_factory) -> Path:
    """An untrained tiny model with the corpus' token statistics: what the evaluation examples load."""
    model = FlowOmni(FlowOmniConfig.preset("tiny", r=4))
    model.fit_speech_stats([load_audio(e.audio) for e in read_manifest(corpus / "train.jsonl")])
    return model.save_pretrained(tmp_path_factory.mktemp("model"))


def table_rows(printed: str) -> dict[tuple[str, ...], list[str]]:
    """Markdown table lines ``| a | b | c | v1 | v2 |`` → {(a, b, c): [v1, v2]} (the header included)."""
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in printed.splitlines() if line.startswith("| ")]
    return {tuple(c[:3]): c[3:] for c in cells}


def test_compare_tokens(corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "compare"
    run_example(
        "compare_tokens.py",
        *("--train", corpus / "train.jsonl", "--test", corpus / "valid.jsonl", "--out", out),
        *("--recipe", "quickstart", "--max-steps", 3, "--codebook-size", 8, "--items", 2),
        *("--conditions", "clean", "white@5", "--max-positions", 12, "--set", *QUICK),
        monkeypatch=monkeypatch,
    )
    rows = table_rows(capsys.readouterr().out)
    assert rows[("task", "condition", "metric")] == ["continuous", "kmeans"]
    for key in [("asr", "clean", "cer"), ("asr", "white@5", "wer"), ("tts", "clean", "mel_l1")]:
        assert all(re.fullmatch(r"\d+\.\d{3}", v) for v in rows[key]), rows
    for variant, tokens in (("continuous", "continuous speech tokens"), ("kmeans", "K = 8")):
        card = (out / variant / "model" / "README.md").read_text()
        assert tokens in card and "3 steps of 4 items" in card


def test_finetune_noisy(corpus, model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ft"
    run_example(
        "finetune_noisy.py",
        *("--model", model_dir, "--train", corpus / "train.jsonl", "--test", corpus / "valid.jsonl", "--out", out),
        *("--max-steps", 3, "--items", 2, "--conditions", "babble@0"),
        *("--set", *QUICK, "eval.tts=false"),
        monkeypatch=monkeypatch,
    )
    printed = capsys.readouterr().out
    assert "## test (2 utterances)" in printed  # only the given test set: the recipe's own were replaced
    assert re.search(r"^\| babble@0 \| \d+\.\d{3} \| \d+\.\d{3} \| [+-]\d+\.\d{3} \|", printed, re.M), printed
    assert f"report: {out / 'eval_report.md'}" in printed
    card = (out / "model" / "README.md").read_text()
    assert f"fine-tuned from `{model_dir}`" in card and "| test | asr | babble@0 | cer |" in card


def write_librispeech(root: Path) -> Path:
    """A miniature LibriSpeech split, as unpacked from openslr: <spk>/<chap>/<spk>-<chap>-<utt>.flac (16 kHz)
    and one <spk>-<chap>.trans.txt per chapter with upper-case transcripts. Utterance 19-198-0001 lasts 3 s."""
    split = root / "LibriSpeech" / "test-clean"
    texts = {("19", "198"): ["ONE TWO", "THREE FOUR"], ("26", "495"): ["FIVE SIX", "SEVEN"]}
    for k, ((spk, chap), lines) in enumerate(texts.items()):
        folder = split / spk / chap
        folder.mkdir(parents=True)
        for i, _ in enumerate(lines):
            seconds = 3.0 if (spk, i) == ("19", 1) else 0.8
            audio = synth_corpus(1, seed=10 * k + i, duration_range=(seconds, seconds), sample_rate=16000)[0]
            save_audio(folder / f"{spk}-{chap}-{i:04d}.flac", audio, 16000)
        (folder / f"{spk}-{chap}.trans.txt").write_text(
            "".join(f"{spk}-{chap}-{i:04d} {t}\n" for i, t in enumerate(lines))
        )
    return split


def test_eval_librispeech(model_dir, tmp_path, monkeypatch, capsys):
    split = write_librispeech(tmp_path)
    manifest = tmp_path / "manifests" / "test-clean.jsonl"
    # The YAML shipped for the real corpus, with its paths pointed at the miniature and a smaller budget.
    settings = [f"corpus={split}", f"manifest={manifest}", "max_seconds=2", "max_new_positions=12"]
    run_example("eval_librispeech.py", "--model", model_dir, "--set", *settings, monkeypatch=monkeypatch)
    printed = capsys.readouterr().out
    assert [e.id for e in read_manifest(manifest)] == ["19-198-0000", "19-198-0001", "26-495-0000", "26-495-0001"]
    assert f"on 3 utterances of {split} (at most 2 s each)" in printed  # the 3 s utterance is left out
    rows = table_rows(printed)
    assert rows[("task", "condition", "metric")] == ["model"]
    for cond in ("clean", "babble@5", "white@0"):  # the YAML's conditions
        assert re.fullmatch(r"\d+\.\d{3}", rows[("asr", cond, "cer")][0]), rows
    assert not any(key[0] == "tts" for key in rows)  # the YAML scores ASR only
