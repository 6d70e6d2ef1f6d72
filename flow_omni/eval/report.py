"""The robustness benchmark's report: tables (mean ± std over seeds), PNG plots and sample audio, as ``report.md``
and a listening page ``report.html``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from flow_omni.checkpoint import atomic_write_text
from flow_omni.eval.document import Block, Bullets, Heading, Images, Table, Text, to_html, to_markdown
from flow_omni.eval.robustness import FINETUNED, UNSEEN, aggregate
from flow_omni.eval.samples import listening, sample_seed
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
    """One aggregate cell as :func:`_mean_std` over its seeds; "—" when it was not scored."""
    a = agg.get(key)
    return "—" if a is None else _mean_std(list(a["by_seed"].values()))


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
    out: Path,
    cfg,
    rows: Sequence[dict],
    aggregate: Sequence[dict],
    timings: dict,
    sizes: dict,
    status: str | None = None,
) -> Path:
    """``report.md`` and ``report.html`` (the same blocks, plus audio players side by side) in ``out``; returns
    the path of ``report.md``. ``status``: a line under the title (e.g. how many of the runs are scored)."""
    out = Path(out)
    blocks = robustness_blocks(out, cfg, aggregate, timings, sizes, status)
    atomic_write_text(out / "report.md", to_markdown(blocks))
    atomic_write_text(out / "report.html", to_html(blocks, TITLE))
    return out / "report.md"


TITLE = "Robustness: continuous vs discrete speech tokens"


def robustness_blocks(
    out: Path, cfg, aggregate: Sequence[dict], timings: dict, sizes: dict, status: str | None = None
) -> list[Block]:
    """The benchmark report as blocks (:mod:`flow_omni.eval.document`); writes the PNG plots into ``out``."""
    agg = {(a["variant"], a["task"], a["condition"], a["metric"]): a for a in aggregate}
    base = [v.name for v in cfg.variants]
    tuned = [v + FINETUNED for v in cfg.tuned_variants()]
    variants = base + tuned
    conditions = cfg.conditions()
    blocks: list[Block] = [
        Heading(TITLE, 1),
        *([Text([status])] if status else []),
        Text(
            [
                f"Variants {', '.join(variants)}; seeds {cfg.seeds} (cells are mean ± std over seeds); the same tiny "
                f"backbone, layout, data, mel space and training budget for every variant ({_budget(cfg, timings)}).",
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
    blocks += compared_blocks(agg, variants, worst)
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
                [
                    [c, *(_cell(agg, (v, task, c, metric)) for v in variants)]
                    for c in conditions + extra
                    if any((v, task, c, metric) in agg for v in variants)  # spoken answers: clean only
                ],
            ),
        ]
        for kind in cfg.noise_kinds:
            xs = [CLEAN_X] + list(cfg.snrs)
            series, spread = {}, {}
            for v in variants:
                keys = [(v, task, "clean", metric)] + [(v, task, f"{kind}@{s:g}", metric) for s in cfg.snrs]
                if all(k in agg for k in keys):
                    series[v] = [agg[k]["mean"] for k in keys]
                    spread[v] = [agg[k]["std"] for k in keys]  # 0 for one seed: no bar
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
                    spread=spread,
                    spread_label="±1 std over seeds",
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
    kept = {v: wavs / v for v in variants if (wavs / v).is_dir()}
    listen = listening(out, kept, conditions + [UNSEEN])
    if listen is not None:
        vocoder = f"Vocos from {cfg.vocoder}" if cfg.vocoder else "Griffin-Lim (no Vocos weights given)"
        seeds = _sample_seeds(kept, variants, cfg.seeds[0])
        blocks += [
            Heading("Sample audio"),
            Text(
                [
                    f"The first {cfg.sample_wavs} item(s) of each task, {seeds}: the input as heard under each "
                    "condition (the same audio for every variant), then what each variant said and wrote; "
                    f"vocoder: {vocoder}. In `report.html` they play side by side."
                ]
            ),
            listen,
        ]
    blocks.append(
        Text(["Raw numbers: `results.json`, `results.csv` (one row per variant, seed, task, condition, metric)."])
    )
    return blocks


def _sample_seeds(kept: dict[str, Path], variants: Sequence[str], first: int) -> str:
    """Which seed's models the sample audio comes from: the seed each ``samples.json`` names, or for
    folders that name none, the benchmark's first seed (the runs that score it keep the samples)."""
    seeds = {v: sample_seed(folder) for v, folder in kept.items()}
    seeds = {v: first if s is None else s for v, s in seeds.items()}
    missing = [v for v in variants if v not in kept]
    if len(set(seeds.values())) == 1:
        text = f"seed {next(iter(seeds.values()))} of each variant" + (" with samples" if missing else "")
    else:
        text = "seed " + ", ".join(f"{s} of {v}" for v, s in seeds.items())
    return text + (f" (none kept for {', '.join(missing)})" if missing else "")


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


#: Two-sided level of the tests that mark a difference with ``*``.
SIGNIFICANCE = 0.05


def seed_values(agg: dict[tuple, dict], v: str, task: str, conds: Sequence[str], metric: str) -> dict[int, float]:
    """Seed → the metric averaged over ``conds``, for the seeds of ``v`` scored on all of them (empty when
    a condition is missing)."""
    cells = [agg.get((v, task, c, metric)) for c in conds]
    if not cells or any(a is None for a in cells):
        return {}
    seeds = set.intersection(*(set(a["by_seed"]) for a in cells))
    return {s: sum(a["by_seed"][s] for a in cells) / len(cells) for s in sorted(seeds)}


def item_values(
    agg: dict[tuple, dict], v: str, task: str, conds: Sequence[str], metric: str, seeds: Sequence[int]
) -> tuple[dict[int, float], int]:
    """Test item (its position in the test set) → the metric averaged over ``conds`` and over ``seeds`` of
    ``v`` (the seeds its seed-level number is made of), and the number of items in the test set. Items
    that a seed or condition does not cover are left out. ``({}, 0)`` when one of those seeds has no
    per-item values for one of ``conds`` (runs scored before they were kept), or when the lists differ
    in length (other test sets: nothing to pair)."""
    cells = [agg.get((v, task, c, metric)) for c in conds]
    if not seeds or any(a is None or not set(seeds) <= set(a.get("items_by_seed", {})) for a in cells):
        return {}, 0
    lists = [a["items_by_seed"][s] for a in cells for s in seeds]
    if len({len(x) for x in lists}) != 1:
        return {}, 0
    values = {i: float(np.mean(x)) for i, x in enumerate(zip(*lists)) if all(y is not None for y in x)}
    return values, len(lists[0])


def item_test(
    agg: dict[tuple, dict],
    task: str,
    conds: Sequence[str],
    metric: str,
    ref: tuple[str, Sequence[int]],
    other: tuple[str, Sequence[int]],
) -> tuple[float, bool]:
    """:func:`sign_flip` over the test items: ``other`` minus ``ref`` (each a variant and the seeds to average),
    item by item; NaN and False when either has no per-item values or their test sets differ in size."""
    (x, n), (y, m) = (item_values(agg, v, task, conds, metric, seeds) for v, seeds in (ref, other))
    if not x or not y or n != m:
        return math.nan, False
    return sign_flip(x, y)


def has_items(agg: dict[tuple, dict]) -> bool:
    """Whether any cell holds per-item values (so that the item test, ``†``, can mark differences)."""
    return any("items_by_seed" in a for a in agg.values())


def welch(x: Sequence[float], y: Sequence[float]) -> tuple[float, bool]:
    """``mean(x) - mean(y)``, and whether Welch's t-test rejects equal means at :data:`SIGNIFICANCE`.

    For two groups of independent trainings (seeds of two variants). It needs two values on each side
    and some spread: without them nothing can be told from retraining noise, and the answer is False."""
    d = float(np.mean(x) - np.mean(y))
    if len(x) < 2 or len(y) < 2:
        return d, False
    a, b = _variance(x) / len(x), _variance(y) / len(y)
    if a + b <= 0:
        return d, False
    df = (a + b) ** 2 / (a**2 / (len(x) - 1) + b**2 / (len(y) - 1))  # Welch-Satterthwaite
    return d, bool(abs(d) > stats.t.ppf(1 - SIGNIFICANCE / 2, df) * math.sqrt(a + b))


def paired(before: dict[int, float], after: dict[int, float]) -> tuple[float, bool]:
    """The mean change ``after - before`` over the keys both have, and whether a paired t-test rejects
    no change at :data:`SIGNIFICANCE`. Keys are seeds: each seed's model against itself after a change (a
    fine-tune); with three seeds a permutation test could never reach 5 %, the t-test can. Test items go
    to :func:`sign_flip`. NaN when no key is shared; False with one key or changes that are all equal."""
    changes = [after[s] - before[s] for s in sorted(set(before) & set(after))]
    if not changes:
        return math.nan, False
    d = float(np.mean(changes))
    if len(changes) < 2:
        return d, False
    se = math.sqrt(_variance(changes) / len(changes))
    return d, bool(se > 0 and abs(d) > stats.t.ppf(1 - SIGNIFICANCE / 2, len(changes) - 1) * se)


#: :func:`sign_flip` counts every sign pattern up to this many non-zero changes (2**32 patterns, as two
#: halves of 2**16 sums each), and samples beyond.
EXACT_FLIPS = 32
#: Random sign patterns :func:`sign_flip` draws past EXACT_FLIPS (seeded, so a report is reproducible; every
#: cell draws the same patterns); the p-value's Monte Carlo error is then about 0.0015 near 5 %.
RANDOM_FLIPS = 20_000


def sign_flip(before: dict[int, float], after: dict[int, float]) -> tuple[float, bool]:
    """The mean change ``after - before`` over the keys both have, and whether a paired sign-flip
    (permutation) test rejects no change at :data:`SIGNIFICANCE` (:func:`sign_flip_pvalue`). NaN when no
    key is shared.

    For test items, where :func:`paired`'s t-test assumes what per-item scores are not: a QA item is 0 or
    1 (of one seed's model under one condition: there the test is McNemar's exact test, in which only the
    items the two systems answer differently count), and a transcript that never stops makes one item's
    error rate a hundred times the others'."""
    changes = [after[k] - before[k] for k in sorted(set(before) & set(after))]
    if not changes:
        return math.nan, False
    return float(np.mean(changes)), bool(sign_flip_pvalue(changes) < SIGNIFICANCE)


def sign_flip_pvalue(changes: Sequence[float]) -> float:
    """Two-sided p-value of no change, given paired changes: under no change every change is as likely
    positive as negative, so it is the share of sign patterns whose sum is at least as far from 0 as the
    one measured; exact for up to :data:`EXACT_FLIPS` non-zero changes, from :data:`RANDOM_FLIPS` seeded
    patterns beyond. Changes of 0 (up to float rounding) flip to themselves and drop out; 1.0 when none
    is left."""
    arr = np.asarray(changes, dtype=float)
    moved = arr[np.abs(arr) > 1e-12 * max(1.0, float(np.abs(arr).max(initial=0.0)))]
    # Sums that differ by float rounding alone are ties: the pattern measured counts itself.
    least = abs(float(moved.sum())) - 1e-9 * float(np.abs(moved).sum())
    if least <= 0:
        return 1.0  # a sum of 0 (or nothing moved): every pattern is as far from 0
    if len(moved) <= EXACT_FLIPS:
        half = len(moved) // 2
        first, second = _pattern_sums(moved[:half]), np.sort(_pattern_sums(moved[half:]))
        # Pairs with |a + b| >= least: b >= least - a or b <= -least - a (never both, as least > 0).
        count = (len(second) - np.searchsorted(second, least - first, "left")).sum()
        count += np.searchsorted(second, -least - first, "right").sum()
        return float(count / 2.0 ** len(moved))
    signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(RANDOM_FLIPS, len(moved)))
    return float(((np.abs(signs @ moved) >= least).sum() + 1) / (RANDOM_FLIPS + 1))


def _pattern_sums(values: np.ndarray) -> np.ndarray:
    """``(2**n,)``: the sum of ``values`` (n of them) under every pattern of signs."""
    codes = np.arange(2 ** len(values))[:, None] >> np.arange(len(values)) & 1
    return (1.0 - 2.0 * codes) @ values


def _variance(values: Sequence[float]) -> float:
    """The sample variance, 0 for values equal up to float rounding: two changes of 0.3 - 0.1 and
    0.4 - 0.2 have no spread, not a spread of 1e-17 that makes any mean significant."""
    arr = np.asarray(values, dtype=float)
    if np.ptp(arr) <= 1e-12 * max(1.0, float(np.abs(arr).max())):
        return 0.0
    return float(np.var(arr, ddof=1))


def _signed(d: float, marked: bool, items_marked: bool = False) -> str:
    """``+0.125 *`` (``†`` too when the item test marks it); a change that rounds to zero is ``+0.000``,
    not ``-0.000``."""
    if math.isnan(d):
        return "—"
    return f"{round(d, 3) + 0.0:+.3f}{' *' if marked else ''}{' †' if items_marked else ''}"


def _mean_std(values: Sequence[float]) -> str:
    """``mean ± std`` over seeds, the value alone for one seed, "—" for none."""
    if not values:
        return "—"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def difference(agg: dict[tuple, dict], v: str, ref: str, task: str, conds: Sequence[str], metric: str) -> str:
    """``v`` minus ``ref`` on a metric averaged over ``conds``, marked ``*`` where Welch's t-test over the
    two variants' seeds (:func:`welch`) says it is beyond retraining noise, and ``†`` where a sign-flip test
    over the test items (:func:`item_test`) says it holds across the items, with its sign; "—" when
    one is missing."""
    x, y = seed_values(agg, v, task, conds, metric), seed_values(agg, ref, task, conds, metric)
    if not x or not y:
        return "—"
    d = welch(list(x.values()), list(y.values()))
    items = item_test(agg, task, conds, metric, (ref, list(y)), (v, list(x)))
    return _signed(*d, _agrees(items, d))


def change(agg: dict[tuple, dict], before: str, after: str, task: str, cond: str, metric: str) -> list[str]:
    """One cell before and after, over the seeds both have (so that the change shown is after minus
    before as shown), and the change, marked ``*`` where :func:`paired` over the seeds rejects no change
    and ``†`` where it does over the test items (each item averaged over those seeds)."""
    b, a = (seed_values(agg, v, task, [cond], metric) for v in (before, after))
    shared = sorted(set(b) & set(a))
    d = paired(b, a)
    items = item_test(agg, task, [cond], metric, (before, shared), (after, shared))
    return [_mean_std([b[s] for s in shared]), _mean_std([a[s] for s in shared]), _signed(*d, _agrees(items, d))]


def _agrees(items: tuple[float, bool], seeds: tuple[float, bool]) -> bool:
    """Whether the item test marks a difference of the same sign as the seeds' one shown beside it (the two
    average over slightly different things: items some seed left uncovered drop out of the first)."""
    return items[1] and math.copysign(1, items[0]) == math.copysign(1, seeds[0])


def pooled_cell(agg: dict[tuple, dict], v: str, task: str, conds: Sequence[str], metric: str) -> str:
    """A metric averaged over ``conds`` as ``mean ± std`` over seeds (the mean alone for one seed)."""
    return _mean_std(list(seed_values(agg, v, task, conds, metric).values()))


def _seeds(agg: dict[tuple, dict], v: str) -> int:
    """How many seeds of ``v`` are scored (on its most-scored cell)."""
    return max((a["seeds"] for k, a in agg.items() if k[0] == v), default=0)


def compared_blocks(agg: dict[tuple, dict], variants: Sequence[str], worst: Sequence[str]) -> list[Block]:
    """The summary metrics (:data:`COMPARED`) of every variant, with the seeds each has so far."""
    seeds = {v: _seeds(agg, v) for v in variants}
    return [
        Text(
            [
                f"Mean ± std over each variant's scored seeds; `@0 dB` averages {', '.join(worst)} seed by seed. "
                "Lower is better for CER, WER and mel L1; higher for accuracy."
            ]
        ),
        Table(
            ["variant", "seeds", *(label for label, *_ in COMPARED)],
            [
                [v, str(seeds[v]), *(pooled_cell(agg, v, task, conds or worst, m) for _, task, conds, m in COMPARED)]
                for v in variants
            ],
        ),
    ]


def _items_note(agg: dict[tuple, dict]) -> str:
    """What ``†`` means, when the rows hold per-item values (else nothing: runs scored before they were kept)."""
    if not has_items(agg):
        return ""
    return (
        "`†`: a paired sign-flip test over the test items (each item's value averaged over the seeds shown, "
        "and over the conditions of a pooled column; on one seed's right-or-wrong QA items, McNemar's exact "
        f"test) rejects no difference at the {SIGNIFICANCE:.0%} level, with the sign shown: the difference "
        "holds across these test sentences, which says nothing of retraining (that is `*`); a difference "
        "that is to hold for this variant and not only for these trained models needs `*`. "
    )


def differences_blocks(agg: dict[tuple, dict], variants: Sequence[str], worst: Sequence[str]) -> list[Block]:
    """Each variant against the first (the continuous baseline) on the summary metrics."""
    ref, others = variants[0], variants[1:]
    if min(_seeds(agg, v) for v in variants) < 2:
        # One training per variant: its difference mixes the variant's effect with retraining noise.
        caution = (
            f"Where a variant or {ref} has a single seed, there is no spread to test against and its "
            "differences are not marked: they mix what the variant changes with what retraining alone moves "
            "(more seeds tell them apart)."
        )
    else:
        caution = (
            "With two or three seeds per variant, only a large and steady difference is marked; an unmarked "
            "one is not shown to exceed what retraining alone moves."
        )
    return [
        Heading(f"Differences from {ref}"),
        Text(
            [
                f"Each cell is the variant's mean minus {ref}'s, over seeds. `*`: Welch's t-test over the two "
                f"variants' seeds rejects equal means at the {SIGNIFICANCE:.0%} level (two-sided; each seed is a "
                f"separate training, scored on the same test items). {caution} {_items_note(agg)}Each cell is "
                "its own test: of 20 differences with no effect behind them, one is marked by chance."
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
                "the input side only), scored on the same test audio before and after, over the seeds that "
                "have both. The change is the mean over seeds of each seed's model after its fine-tune minus "
                f"the same model before; `*`: a paired t-test over seeds rejects no change at the "
                f"{SIGNIFICANCE:.0%} level (two-sided). Each cell is its own test: of 20 cells with no change "
                "behind them, one is marked by chance, and with two seeds (one degree of freedom) a mark says "
                f"more about two seeds agreeing than about the size of the change. {_items_note(agg)}Clean and "
                "unseen voices show whether it forgets."
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
                row += change(agg, v, after, task, c, metric)
            rows.append(row)
        blocks += [Text([f"**{label}**"]), Table(header, rows)]
    return blocks


def _budget(cfg, timings: dict | None = None) -> str:
    """The training budget shared by every run, in words. ``timings`` (run → its timing, as the benchmark
    keeps it) gives the precision each run trained in: ``auto`` is resolved by the machine that trained,
    which need not be the one writing the report."""
    t = cfg.train
    recipe = f"recipe {cfg.recipe}" if getattr(cfg, "recipe", None) else "default training settings"
    parts = [recipe]
    if "max_steps" in t:
        parts.append(f"{t['max_steps']} steps")
    if "precision" in t:
        asked = t["precision"]
        trained = sorted({x["precision"] for x in (timings or {}).values() if x.get("precision")})
        if trained:
            parts.append(asked if trained == [asked] else f"{asked} ({', '.join(trained)} in training)")
        elif resolve_precision(asked, t.get("accelerator", "auto")) == asked:  # named outright
            parts.append(asked)
        else:
            parts.append(f"{asked} (the precision it chose was not recorded by these runs)")
    if "batch_size" in t.get("data", {}):
        parts.append(f"batch {t['data']['batch_size']}")
    # The settings this budget changes from the recipe, so that a reader does not take the recipe's own.
    if "lr" in t.get("optim", {}):
        parts.append(f"lr {t['optim']['lr']:g}")
    weights = t.get("data", {}).get("task_weights")
    if weights:
        parts.append("tasks " + " : ".join(f"{k} {v:g}" for k, v in weights.items()))
    return ", ".join(parts)
