"""The before/after report of a fine-tune: Markdown table, JSON numbers and a PNG."""

from __future__ import annotations

import json
from pathlib import Path

from flow_omni.checkpoint import atomic_write_text
from flow_omni.plotting import plot_bars


def write_eval_report(
    out_dir: str | Path, before: dict, after: dict, *, title: str = "Fine-tune: before and after"
) -> Path:
    """``out_dir/eval_report.md`` (+ ``eval.json``, ``eval_cer.png``) from two :func:`evaluate_heldout` results."""
    out = Path(out_dir)
    atomic_write_text(out / "eval.json", json.dumps({"before": before, "after": after}, indent=2))
    lines = [
        f"# {title}",
        "",
        "ASR through the model's own A→T mode (greedy), CER/WER after text normalisation; "
        "the same noisy audio is used before and after (noise seeded per utterance and condition). "
        "TTS: greedy T→A, mean |Δ log-mel| to the reference (lower is better).",
        "",
    ]
    cats, cer_before, cer_after = [], [], []
    for name, res in before.items():
        lines += [
            f"## {name} ({res['n']} utterances)",
            "",
            "| condition | CER before | CER after | Δ CER | WER before | WER after |",
            "|---|---|---|---|---|---|",
        ]
        for cond, b in res["asr"].items():
            a = after[name]["asr"][cond]
            lines.append(
                f"| {cond} | {b['cer']:.3f} | {a['cer']:.3f} | {a['cer'] - b['cer']:+.3f} | "
                f"{b['wer']:.3f} | {a['wer']:.3f} |"
            )
            cats.append(f"{name}:{cond}")
            cer_before.append(b["cer"])
            cer_after.append(a["cer"])
        if res.get("tts_mel_l1") is not None:
            lines += [
                "",
                f"TTS log-mel distance: before {res['tts_mel_l1']:.3f}, after {after[name]['tts_mel_l1']:.3f}",
            ]
        ex = after[name]["asr"][next(iter(after[name]["asr"]))]["examples"][:2]
        if ex:
            lines += ["", "Examples after (first condition):", ""]
            lines += [f"- ref `{e['ref']}` → hyp `{e['hyp']}`" for e in ex]
        lines.append("")
    plot_bars(
        cats,
        {"before": cer_before, "after": cer_after},
        out / "eval_cer.png",
        ylabel="CER",
        title="ASR CER per condition",
    )
    lines += ["![CER per condition](eval_cer.png)", ""]
    path = out / "eval_report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
