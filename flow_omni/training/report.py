"""The before/after report of a fine-tune: ``eval_report.md`` and the listening page ``report.html``, JSON
numbers and a PNG."""

from __future__ import annotations

import json
from pathlib import Path

from flow_omni.checkpoint import atomic_write_text
from flow_omni.eval.document import Block, Bullets, Heading, Images, Table, Text, to_html, to_markdown
from flow_omni.eval.samples import listening
from flow_omni.plotting import plot_bars


def write_eval_report(
    out_dir: str | Path, before: dict, after: dict, *, title: str = "Fine-tune: before and after"
) -> Path:
    """``out_dir/eval_report.md`` and ``out_dir/report.html`` (+ ``eval.json``, ``eval_cer.png``) from two
    :func:`evaluate_heldout` results; the page also plays the samples kept in ``out_dir/wavs/{before,after}``."""
    out = Path(out_dir)
    atomic_write_text(out / "eval.json", json.dumps({"before": before, "after": after}, indent=2))
    blocks: list[Block] = [
        Heading(title, 1),
        Text(
            [
                "ASR through the model's own A→T mode (greedy), CER/WER after text normalisation; "
                "the same noisy audio is used before and after (noise seeded per utterance and condition). "
                "TTS: greedy T→A, mean |Δ log-mel| to the reference (lower is better)."
            ]
        ),
    ]
    cats, cer_before, cer_after = [], [], []
    for name, res in before.items():
        rows = []
        for cond, b in res["asr"].items():
            a = after[name]["asr"][cond]
            rows.append(
                [
                    cond,
                    f"{b['cer']:.3f}",
                    f"{a['cer']:.3f}",
                    f"{a['cer'] - b['cer']:+.3f}",
                    f"{b['wer']:.3f}",
                    f"{a['wer']:.3f}",
                ]
            )
            cats.append(f"{name}:{cond}")
            cer_before.append(b["cer"])
            cer_after.append(a["cer"])
        blocks += [
            Heading(f"{name} ({res['n']} utterances)"),
            Table(["condition", "CER before", "CER after", "Δ CER", "WER before", "WER after"], rows),
        ]
        if res.get("tts_mel_l1") is not None:
            blocks.append(
                Text([f"TTS log-mel distance: before {res['tts_mel_l1']:.3f}, after {after[name]['tts_mel_l1']:.3f}"])
            )
        ex = after[name]["asr"][next(iter(after[name]["asr"]))]["examples"][:2]
        if ex:
            blocks += [
                Text(["Examples after (first condition):"]),
                Bullets([f"ref `{e['ref']}` → hyp `{e['hyp']}`" for e in ex]),
            ]
    plot_bars(
        cats,
        {"before": cer_before, "after": cer_after},
        out / "eval_cer.png",
        ylabel="CER",
        title="ASR CER per condition",
    )
    blocks.append(Images([("eval_cer.png", "CER per condition")]))
    wavs = out / "wavs"
    listen = listening(out, {k: wavs / k for k in ("before", "after") if (wavs / k).is_dir()})
    if listen is not None:
        blocks += [
            Heading("Sample audio"),
            Text(
                [
                    "The first items of each held-out set: the input as heard under each condition (the same audio "
                    "before and after) with the transcript before and after training, and the TTS speech "
                    "(Griffin-Lim). In `report.html` they play side by side."
                ]
            ),
            listen,
        ]
    atomic_write_text(out / "eval_report.md", to_markdown(blocks))
    atomic_write_text(out / "report.html", to_html(blocks, title))
    return out / "eval_report.md"
