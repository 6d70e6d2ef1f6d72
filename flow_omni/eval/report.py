"""The robustness benchmark's report: tables (mean ± std over seeds), PNG plots and sample audio, as ``report.md``
and a listening page ``report.html``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from flow_omni.checkpoint import atomic_write_text
from flow_omni.eval.document import Block, Bullets, Heading, Images, Table, Text, to_html, to_markdown
from flow_omni.eval.robustness import FINETUNED, UNSEEN, aggregate
from flow_omni.eval.samples import listening
from flow_omni.plotting import plot_curve
from flow_omni.precision import resolve_precision

#: x position of the clean condition on metric-vs-SNR plots (clean = no noise, drawn right of 20 dB)
CLEAN_X = 30.0

LOWER_IS_BETTER = {"cer", "wer", "mel_l1", "self_asr_cer"}
#: The values a plotted metric can take: shares in [0, 1]; error rates from 0 up (insertions take CER past 1).
VALUE_RANGE = {"accuracy": (0.0, 1.0), "speech_accuracy": (0.0, 1.0), "cer": (0.0, None), "wer": (0.0, None)}
#: Variants on a metric-vs-SNR plot are drawn this share of the SNR span apart, so equal values stay visible.
DODGE = 0.02


def _cell(agg: dict[tuple, dict], key: tuple) -> str:
    a = agg.get(key)
    if a is None:
        return "—"
    return f"{a['mean']:.3f} ± {a['std']:.3f}" if a["seeds"] > 1 else f"{a['mean']:.3f}"


def metrics_table(rows: Sequence[dict]) -> str:
    """:func:`~flow_omni.eval.robustness.evaluate_model` rows as a Markdown table: a line per (task, condition,
    metric), a column per variant (mean ± std when there are several seeds), in the order the rows came."""
    agg = {(a["variant"], a["task"], a["condition"], a["metric"]): a for a in aggregate(rows)}
    variants = list(dict.fromkeys(k[0] for k in agg))
    table = Table(
        ["task", "condition", "metric", *variants],
        [[*key, *(_cell(agg, (v, *key)) for v in variants)] for key in dict.fromkeys(k[1:] for k in agg)],
    )
    return to_markdown([table]).rstrip("\n")


#: What counts as learned, for the report's plain-words summary (the learning issue's bars).
LISTENS_CER = 0.5  # clean ASR CER at or below this: the model transcribes
ANSWERS_ACC = 0.5  # clean spoken-QA accuracy at or above this: the model answers
SPEAKS_RATIO = 1.5  # Whisper WER of its speech within this factor of the resynthesis ceiling: intelligible


def learned(agg: dict[tuple, dict], v: str) -> str:
    """One line on what variant ``v`` learned, judged against the bars above on the clean condition."""

    def get(task, metric):
        a = agg.get((v, task, "clean", metric))
        return None if a is None else a["mean"]

    parts = []
    cer = get("asr", "cer")
    if cer is not None:
        verdict = "transcribes" if cer <= LISTENS_CER else f"does not transcribe yet (bar: CER ≤ {LISTENS_CER})"
        parts.append(f"ASR CER {cer:.2f}, {verdict}")
    acc = get("qa", "accuracy")
    if acc is not None:
        verdict = "answers" if acc >= ANSWERS_ACC else f"does not answer yet (bar: ≥ {ANSWERS_ACC})"
        parts.append(f"spoken-QA accuracy {acc:.2f}, {verdict}")
    heard, ceiling = get("tts", "whisper_wer"), get("tts", "whisper_wer_ceiling")
    if heard is not None and ceiling is not None:
        ok = heard <= SPEAKS_RATIO * max(ceiling, 1e-9)
        verdict = "intelligible" if ok else f"not yet intelligible (bar: ≤ {SPEAKS_RATIO}× the ceiling)"
        held = get("tts", "whisper_wer_tokens")
        codes = "" if held is None else f" and {held:.2f} for the reference in its codes"
        parts.append(
            f"TTS Whisper WER {heard:.2f} against {ceiling:.2f} for the resynthesised reference{codes}, {verdict}"
        )
    return "; ".join(parts) if parts else "not scored"


def write_robustness_report(
    out: Path, cfg, rows: Sequence[dict], aggregate: Sequence[dict], timings: dict, sizes: dict
) -> Path:
    """``report.md`` and ``report.html`` (the same blocks, plus audio players side by side) in ``out``; returns
    the path of ``report.md``."""
    out = Path(out)
    blocks = robustness_blocks(out, cfg, aggregate, timings, sizes)
    atomic_write_text(out / "report.md", to_markdown(blocks))
    atomic_write_text(out / "report.html", to_html(blocks, TITLE))
    return out / "report.md"


TITLE = "Robustness: continuous vs discrete speech tokens"


def robustness_blocks(out: Path, cfg, aggregate: Sequence[dict], timings: dict, sizes: dict) -> list[Block]:
    """The benchmark report as blocks (:mod:`flow_omni.eval.document`); writes the PNG plots into ``out``."""
    agg = {(a["variant"], a["task"], a["condition"], a["metric"]): a for a in aggregate}
    base = [v.name for v in cfg.variants]
    tuned = [v + FINETUNED for v in cfg.tuned_variants()]
    variants = base + tuned
    conditions = cfg.conditions()
    blocks: list[Block] = [
        Heading(TITLE, 1),
        Text(
            [
                f"Variants {', '.join(variants)}; seeds {cfg.seeds} (cells are mean ± std over seeds); the same tiny "
                f"backbone, layout, data, mel space and training budget for every variant ({_budget(cfg)}).",
                f"Test sets: {sizes['test']} utterances (ASR, TTS), {sizes['qa']} spoken questions (QA), "
                f"{sizes['unseen']} utterances in voices unseen in training.",
            ]
        ),
        Text(
            [
                "Metrics: ASR = the model's own greedy A→T, CER/WER after normalisation (lower is better); TTS = "
                "greedy T→A from text, mean |Δ log-mel| to the reference recording over the common length (lower is "
                "better; a model that stays silent is scored against the log-mel floor), `spoke` = share of prompts "
                "that produced speech, `self_asr_cer` = the model's own ASR of what it said (its generated tokens for "
                "a conv encoder, the vocoded audio for a Whisper encoder), `mcd_db` = mel-cepstral distortion "
                "(DTW-aligned, c1–c12 of the DCT of the 100-bin natural-log mel; not SPTK mel-cepstra, so compare "
                "variants with each other, not with published MCDs), `whisper_wer` = Whisper tiny.en's WER on the "
                "vocoded output (when installed), `whisper_wer_ceiling` = the same for the reference mel through the "
                "same vocoder, `whisper_wer_tokens` (models that speak codes) = the same for the reference as the "
                "model's codes can hold it (the ceiling of a perfect predictor of its tokens); QA = share of spoken "
                "questions whose text answer is right (`score_answer`); `speech_accuracy` = the same for the spoken "
                "answer, vocoded and transcribed by Whisper (a silent answer is wrong). Noise is seeded per "
                "utterance and condition, so every variant hears identical audio."
            ]
        ),
        Heading("Summary"),
    ]
    worst = [c for c in conditions if c.endswith("@0")] or conditions[-1:]

    def avg(v, task, metric, conds):
        vals = [agg[(v, task, c, metric)]["mean"] for c in conds if (v, task, c, metric) in agg]
        return f"{sum(vals) / len(vals):.3f}" if vals else "—"

    blocks.append(
        Table(
            [
                "variant",
                "ASR CER clean",
                f"ASR CER @0 dB (mean of {len(worst)})",
                "ASR CER unseen voices",
                "TTS mel L1",
                "TTS spoke",
                "QA acc clean",
                "QA acc @0 dB",
            ],
            [
                [
                    v,
                    _cell(agg, (v, "asr", "clean", "cer")),
                    avg(v, "asr", "cer", worst),
                    _cell(agg, (v, "asr", "unseen_voices", "cer")),
                    _cell(agg, (v, "tts", "clean", "mel_l1")),
                    _cell(agg, (v, "tts", "clean", "spoke")),
                    _cell(agg, (v, "qa", "clean", "accuracy")),
                    avg(v, "qa", "accuracy", worst),
                ]
                for v in variants
            ],
        )
    )
    blocks += [Heading("What was learned"), Bullets([f"{v}: {learned(agg, v)}" for v in variants])]
    if len(base) > 1:
        blocks += differences_blocks(agg, base, worst)
    if tuned:
        blocks += finetune_blocks(agg, [v[: -len(FINETUNED)] for v in tuned], conditions)
    plots = []
    for task, metric, title in (
        ("asr", "cer", "ASR CER"),
        ("asr", "wer", "ASR WER"),
        ("qa", "accuracy", "QA accuracy"),
        ("qa", "speech_accuracy", "QA accuracy of the spoken answer (Whisper)"),
    ):
        if not any(k[1] == task and k[3] == metric for k in agg):
            continue
        extra = ["unseen_voices"] if task == "asr" else []
        blocks += [
            Heading(f"{title} by condition"),
            Table(
                ["condition", *variants],
                [[c, *(_cell(agg, (v, task, c, metric)) for v in variants)] for c in conditions + extra],
            ),
        ]
        for kind in cfg.noise_kinds:
            xs = [CLEAN_X] + list(cfg.snrs)
            series = {}
            for v in variants:
                keys = [(v, task, "clean", metric)] + [(v, task, f"{kind}@{s:g}", metric) for s in cfg.snrs]
                if all(k in agg for k in keys):
                    series[v] = [agg[k]["mean"] for k in keys]
            if series:
                name = f"{task}_{metric}_vs_snr_{kind}.png"
                plot_curve(
                    xs,
                    series,
                    out / name,
                    xlabel=f"SNR (dB), {kind} noise; clean drawn at {CLEAN_X:g}",
                    ylabel=title,
                    title=f"{title} vs SNR ({kind})",
                    value_range=VALUE_RANGE[metric],
                    dodge=DODGE,
                )
                plots.append(name)
    for task, title in (
        ("tts", "TTS (clean text in)"),
        (
            "latency",
            "Streaming TTS latency (generation only, median of the first test "
            "prompts, one run at a time; seconds, RTF = compute / audio duration)",
        ),
    ):
        task_metrics = sorted({k[3] for k in agg if k[1] == task})
        if task_metrics:
            blocks += [
                Heading(title),
                Table(
                    ["metric", *variants],
                    [[m, *(_cell(agg, (v, task, "clean", m)) for v in variants)] for m in task_metrics],
                ),
            ]
    if plots:
        blocks += [Heading("Plots"), Images([(p, p) for p in plots])]
    blocks += [
        Heading("Cost"),
        Text(
            [
                f"Wall-clock seconds per run, {cfg.jobs} run(s) at a time"
                + (f" with {cfg.threads} torch thread(s) each." if cfg.threads else ".")
            ]
        ),
        Table(
            ["model", "parameters", "train (s)", "eval (s)"],
            [
                [name, f"{t['parameters'] / 1e6:.2f} M", f"{t['train_s']:.0f}", f"{t['eval_s']:.0f}"]
                for name, t in timings.items()
            ],
        ),
    ]
    wavs = out / "wavs"
    listen = listening(out, {v: wavs / v for v in variants if (wavs / v).is_dir()}, conditions + [UNSEEN])
    if listen is not None:
        vocoder = f"Vocos from {cfg.vocoder}" if cfg.vocoder else "Griffin-Lim (no Vocos weights given)"
        blocks += [
            Heading("Sample audio"),
            Text(
                [
                    f"The first {cfg.sample_wavs} item(s) of each task, first seed of each variant: the input as "
                    "heard under each condition (the same audio for every variant), then what each variant said "
                    f"and wrote; vocoder: {vocoder}. In `report.html` they play side by side."
                ]
            ),
            listen,
        ]
    blocks.append(
        Text(["Raw numbers: `results.json`, `results.csv` (one row per variant, seed, task, condition, metric)."])
    )
    return blocks


#: The summary metrics compared between variants: (label, task, conditions or None = the worst ones, metric).
COMPARED = (
    ("ASR CER clean", "asr", ["clean"], "cer"),
    ("ASR CER @0 dB", "asr", None, "cer"),
    ("ASR CER unseen voices", "asr", [UNSEEN], "cer"),
    ("QA acc clean", "qa", ["clean"], "accuracy"),
    ("TTS Whisper WER", "tts", ["clean"], "whisper_wer"),
    ("TTS own-ASR CER", "tts", ["clean"], "self_asr_cer"),
    ("TTS mel L1", "tts", ["clean"], "mel_l1"),
)


def _pooled(agg: dict[tuple, dict], v: str, task: str, conds: Sequence[str], metric: str) -> tuple[float, float, int]:
    """(mean, variance of that mean over seeds, seeds) of a metric averaged over ``conds``; NaN when missing."""
    cells = [agg.get((v, task, c, metric)) for c in conds]
    if not cells or any(a is None for a in cells):
        return math.nan, math.nan, 0
    n = min(a["seeds"] for a in cells)
    mean = sum(a["mean"] for a in cells) / len(cells)
    # The conditions of one seed share the model, so their errors add as if correlated (an upper bound).
    std = sum(a["std"] for a in cells) / len(cells)
    return mean, std**2 / n, n


def difference(agg: dict[tuple, dict], v: str, ref: str, task: str, conds: Sequence[str], metric: str) -> str:
    """``v`` minus ``ref`` on a metric, marked ``*`` when it exceeds twice its standard error over seeds.

    Each variant's seeds are independent trainings, so the error of the difference of the two means is
    ``sqrt(s_v² / n_v + s_ref² / n_ref)``; with one seed there is no spread and nothing is marked."""
    mv, var_v, nv = _pooled(agg, v, task, conds, metric)
    mr, var_r, nr = _pooled(agg, ref, task, conds, metric)
    if math.isnan(mv) or math.isnan(mr):
        return "—"
    d = mv - mr
    se = math.sqrt(var_v + var_r)
    beyond = nv > 1 and nr > 1 and abs(d) > 2 * se
    return f"{d:+.3f}{' *' if beyond else ''}"


def differences_blocks(agg: dict[tuple, dict], variants: Sequence[str], worst: Sequence[str]) -> list[Block]:
    """Each variant against the first (the continuous baseline) on the summary metrics."""
    ref, others = variants[0], variants[1:]
    return [
        Heading(f"Differences from {ref}"),
        Text(
            [
                f"Each cell is the variant's mean minus {ref}'s, over seeds. `*`: the difference exceeds twice "
                "its standard error over seeds (each variant's seeds are separate trainings on the same test "
                f"items); unmarked differences are within what retraining alone moves. `@0 dB` averages "
                f"{', '.join(worst)}. Lower is better for CER, WER and mel L1; higher for accuracy."
            ]
        ),
        Table(
            ["variant", *(label for label, *_ in COMPARED)],
            [
                [v, *(difference(agg, v, ref, task, conds or worst, m) for _, task, conds, m in COMPARED)]
                for v in others
            ],
        ),
    ]


def finetune_blocks(agg: dict[tuple, dict], variants: Sequence[str], conditions: Sequence[str]) -> list[Block]:
    """Before and after the noisy-domain fine-tune, per variant and condition: ASR CER and QA accuracy."""
    blocks: list[Block] = [
        Heading("Noisy-domain fine-tune: before → after"),
        Text(
            [
                "The noisy_finetune recipe from each trained model (noise, rate, pitch and room augmentation on "
                "the input side only), scored on the same test audio before and after. `*` marks a change "
                "beyond twice its standard error over seeds (unpaired, so cautious: before and after share a seed). "
                "Clean and unseen voices show whether it forgets."
            ]
        ),
    ]
    for task, metric, label in (("asr", "cer", "ASR CER"), ("qa", "accuracy", "QA accuracy")):
        header = ["condition"]
        for v in variants:
            header += [f"{v} before", "after", "change"]
        rows = []
        for c in list(conditions) + ([UNSEEN] if task == "asr" else []):
            row = [c]
            for v in variants:
                after = v + FINETUNED
                row += [
                    _cell(agg, (v, task, c, metric)),
                    _cell(agg, (after, task, c, metric)),
                    difference(agg, after, v, task, [c], metric),
                ]
            rows.append(row)
        blocks += [Text([f"**{label}**"]), Table(header, rows)]
    return blocks


def _budget(cfg) -> str:
    t = cfg.train
    recipe = f"recipe {cfg.recipe}" if getattr(cfg, "recipe", None) else "default training settings"
    parts = [recipe]
    if "max_steps" in t:
        parts.append(f"{t['max_steps']} steps")
    if "precision" in t:
        resolved = resolve_precision(t["precision"], t.get("accelerator", "auto"))
        parts.append(t["precision"] if resolved == t["precision"] else f"{t['precision']} ({resolved} here)")
    if "batch_size" in t.get("data", {}):
        parts.append(f"batch {t['data']['batch_size']}")
    # The settings this budget changes from the recipe, so that a reader does not take the recipe's own.
    if "lr" in t.get("optim", {}):
        parts.append(f"lr {t['optim']['lr']:g}")
    weights = t.get("data", {}).get("task_weights")
    if weights:
        parts.append("tasks " + " : ".join(f"{k} {v:g}" for k, v in weights.items()))
    return ", ".join(parts)
