"""The robustness benchmark on a miniature setting: every artefact is written, numbers aggregate right."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
import yaml

from flow_omni import FlowOmni
from flow_omni.bench import RobustnessConfig
from flow_omni.eval.report import _budget, metrics_table
from flow_omni.eval.robustness import aggregate


def test_aggregate_mean_and_std_by_hand():
    rows = [
        {"variant": "a", "seed": s, "task": "asr", "condition": "clean", "metric": "cer", "value": v, "n": 2}
        for s, v in ((0, 0.2), (1, 0.4), (2, 0.6))
    ]
    (agg,) = aggregate(rows)
    assert agg["mean"] == pytest.approx(0.4) and agg["std"] == pytest.approx(0.2) and agg["seeds"] == 3
    assert agg["by_seed"] == {0: 0.2, 1: 0.4, 2: 0.6}


def test_differences_are_marked_by_welch_and_paired_t_tests_over_seeds():
    """``*`` in the report: Welch's t-test between two variants' seeds, a paired t-test for a fine-tune
    (each seed against itself), both at 5 %; the same verdicts as scipy's own tests."""
    from scipy import stats

    from flow_omni.eval.report import change, difference, paired, pooled_cell, seed_values, welch

    rng = np.random.default_rng(0)
    verdicts = set()
    for _ in range(200):
        n, m = rng.integers(2, 6, size=2)
        x, y = rng.normal(0, 1, n), rng.normal(rng.normal(0, 2), rng.uniform(0.2, 2), m)
        d, marked = welch(x, y)
        assert d == pytest.approx(x.mean() - y.mean())
        assert marked == (stats.ttest_ind(x, y, equal_var=False).pvalue < 0.05)
        after = x + rng.normal(rng.normal(0, 1), rng.uniform(0.1, 1), n)
        d, marked = paired(dict(enumerate(x)), dict(enumerate(after)))
        assert d == pytest.approx((after - x).mean())
        assert marked == (stats.ttest_rel(after, x).pvalue < 0.05)
        verdicts.add(marked)
    assert verdicts == {True, False}  # the cases above are not all on one side
    # Nothing to tell retraining noise by: one seed, or no spread at all.
    assert welch([0.5], [0.1, 0.2]) == (pytest.approx(0.35), False)
    assert welch([0.5, 0.5], [0.1, 0.1]) == (pytest.approx(0.4), False)
    assert paired({0: 0.1, 1: 0.2}, {0: 0.3, 1: 0.4}) == (pytest.approx(0.2), False)
    assert math.isnan(paired({0: 0.1}, {1: 0.2})[0])
    # In the report's cells: averaged over conditions seed by seed, and a fine-tune paired by seed.
    cer_by_seed = {  # (variant, condition): seeds 0, 1, 2
        ("a", "white@0"): (0.50, 0.52, 0.49),
        ("a", "babble@0"): (0.70, 0.72, 0.69),
        ("b", "white@0"): (0.10, 0.12, 0.11),
        ("b", "babble@0"): (0.30, 0.31, 0.29),
    }
    rows = [
        {"variant": v, "seed": s, "task": "asr", "condition": c, "metric": "cer", "value": x, "n": 4}
        for (v, c), values in cer_by_seed.items()
        for s, x in enumerate(values)
    ]
    agg = {(a["variant"], a["task"], a["condition"], a["metric"]): a for a in aggregate(rows)}
    assert difference(agg, "b", "a", "asr", ["white@0", "babble@0"], "cer") == "-0.398 *"
    assert difference(agg, "b", "a", "asr", ["pink@0"], "cer") == "—"
    assert change(agg, "a", "b", "asr", "white@0", "cer") == ["0.503 ± 0.015", "0.110 ± 0.010", "-0.393 *"]
    # A seed scored in one condition only counts nowhere the conditions are averaged, and a fine-tune's
    # before and after are shown over the seeds both have, so that the change is after minus before.
    more = rows + [
        {"variant": "a", "seed": 3, "task": "asr", "condition": "white@0", "metric": "cer", "value": 0.9, "n": 4}
    ]
    agg = {(a["variant"], a["task"], a["condition"], a["metric"]): a for a in aggregate(more)}
    assert seed_values(agg, "a", "asr", ["white@0", "babble@0"], "cer") == pytest.approx({0: 0.6, 1: 0.62, 2: 0.59})
    assert pooled_cell(agg, "a", "asr", ["white@0"], "cer") == "0.603 ± 0.199"
    assert change(agg, "a", "b", "asr", "white@0", "cer")[0] == "0.503 ± 0.015"
    with pytest.raises(ValueError, match="two rows for seed 3 of a asr white@0 cer"):
        aggregate(more + more[-1:])
    assert difference(agg, "a", "a", "asr", ["babble@0"], "cer") == "+0.000"  # never "-0.000"
    # The report says why nothing is marked when a variant has a single seed.
    from flow_omni.eval.document import to_markdown
    from flow_omni.eval.report import differences_blocks

    assert "has a single seed" not in to_markdown(differences_blocks(agg, ["a", "b"], ["white@0"]))
    one = {k: {**a, "by_seed": {0: a["by_seed"][0]}, "seeds": 1} if k[0] == "b" else a for k, a in agg.items()}
    text = to_markdown(differences_blocks(one, ["a", "b"], ["white@0"]))
    assert "Where a variant or a has a single seed" in text and "| b | — | -0.503 |" in text  # unmarked: b has one seed


def test_the_item_test_is_an_exact_sign_flip_test_and_mcnemar_on_right_or_wrong_items():
    """``†``'s test: every sign pattern of the changes up to EXACT_FLIPS of them (scipy's exact permutation
    test gives the same p-value), seeded random ones beyond; on 0/1 items McNemar's exact test."""
    from scipy import stats

    from flow_omni.eval.report import EXACT_FLIPS, paired, sign_flip, sign_flip_pvalue

    rng = np.random.default_rng(2)
    for _ in range(60):
        n = int(rng.integers(2, 13))
        before = rng.integers(0, 4, n) / 3 if rng.random() < 0.5 else rng.uniform(0, 1, n)  # thirds: 3 seeds
        after = before + rng.normal(rng.normal(0, 0.3), 0.3, n) * (rng.random(n) < 0.8)
        exact = stats.permutation_test(
            (after, before), lambda x, y: np.mean(x - y), permutation_type="samples", n_resamples=np.inf
        )
        assert sign_flip_pvalue(after - before) == pytest.approx(exact.pvalue)
        d, marked = sign_flip(dict(enumerate(before)), dict(enumerate(after)))
        assert d == pytest.approx((after - before).mean()) and marked == (exact.pvalue < 0.05)
    # A sum of 0 up to float rounding is a tie with every pattern whose sum is 0: p = 1, not 0.875.
    assert sign_flip_pvalue(np.array([2, 1, 0, 1, 3, 1]) / 3 - np.array([1, 2, 3, 2, 0, 0]) / 3) == 1.0
    assert sign_flip_pvalue([0.3 - 0.1, 0.4 - 0.2, 0.5 - 0.3, 0.6 - 0.4]) == pytest.approx(2 / 16)

    def qa(better, worse, items=24):  # 0/1 items: `better` right only after, `worse` right only before
        before = [0.0] * better + [1.0] * worse + [1.0] * (items - better - worse)
        after = [1.0] * better + [0.0] * worse + [1.0] * (items - better - worse)
        return dict(enumerate(before)), dict(enumerate(after))

    # Five more answers right and none lost: McNemar's p = 2 / 2**5 = 0.0625, no mark; the t-test over the
    # 24 items, which takes the equal answers for evidence too, marks it. Six: p = 0.031, marked.
    assert not sign_flip(*qa(5, 0))[1] and paired(*qa(5, 0))[1]
    assert sign_flip(*qa(6, 0))[1]
    # Any split of up to EXACT_FLIPS items answered differently: McNemar's (the binomial test's) p-value.
    for better, worse in ((15, 5), (14, 6), (5, 15), (21, 11), (30, 2)):
        before, after = qa(better, worse, items=40)
        changes = [after[i] - before[i] for i in before]
        assert sign_flip_pvalue(changes) == pytest.approx(stats.binomtest(better, better + worse).pvalue)
    # Beyond, from random sign patterns: the verdict of the exact test where it is not close.
    for better, worse in ((26, 14), (29, 11), (11, 29)):
        assert better + worse > EXACT_FLIPS
        assert sign_flip(*qa(better, worse, 48))[1] == (stats.binomtest(better, better + worse).pvalue < 0.05)
    # Every item a little better and one a lot (a transcript that ran on before): the t-test sees only the
    # one, the sign-flip test that all 24 moved the same way.
    before = dict(enumerate([0.3] * 23 + [10.0]))
    after = {i: x - 0.01 if i < 23 else 0.3 for i, x in before.items()}
    assert sign_flip(before, after)[1] and not paired(before, after)[1]
    assert sign_flip({0: 0.5, 1: 0.5}, {0: 0.5, 1: 0.5}) == (0.0, False)
    assert math.isnan(sign_flip({0: 0.1}, {1: 0.2})[0])


def test_item_test_marks_differences_that_hold_across_the_test_items():
    """``†``: a sign-flip test over test items, each item's value averaged over the seeds (and conditions);
    items a seed or condition leaves uncovered (None) drop out; scipy's permutation test gives the same
    verdict."""
    from scipy import stats

    from flow_omni.eval.report import change, difference, has_items, item_values
    from flow_omni.eval.robustness import _at

    # A value per spoken prompt, placed at that prompt's position among all the test items.
    assert _at([1, 3], [0.5, 0.7], 4) == [None, 0.5, None, 0.7]
    with pytest.raises(ValueError):
        _at([1, 3], [0.5], 4)

    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.6, 12)  # the items' difficulty, shared by every model

    def rows(variant, shift, spread, seeds=(0, 1)):
        out = []
        for s in seeds:
            items = list(base + shift + rng.normal(0, spread, 12))
            items[3] = None if s == 1 else items[3]  # one item this seed's model left silent
            values = [x for x in items if x is not None]
            out.append(
                {
                    "variant": variant,
                    "seed": s,
                    "task": "tts",
                    "condition": "clean",
                    "metric": "mel_l1",
                    "value": float(np.mean(values)),
                    "n": 12,
                    "items": items,
                }
            )
        return out

    all_rows = rows("a", 0.0, 0.02) + rows("b", 0.05, 0.02) + rows("c", 0.0, 0.3) + rows("a+ft", 0.05, 0.02)
    agg = {(a["variant"], a["task"], a["condition"], a["metric"]): a for a in aggregate(all_rows)}
    assert has_items(agg)
    (a, n), (b, _) = (item_values(agg, v, "tts", ["clean"], "mel_l1", [0, 1]) for v in ("a", "b"))
    assert n == 12
    assert sorted(a) == [i for i in range(12) if i != 3]  # item 3 is not covered by seed 1
    assert item_values(agg, "a", "tts", ["clean"], "mel_l1", [0])[0][3] == pytest.approx(
        agg[("a", "tts", "clean", "mel_l1")]["items_by_seed"][0][3]
    )
    keys = sorted(a)
    expected = (
        stats.permutation_test(
            ([b[i] for i in keys], [a[i] for i in keys]),
            lambda x, y: np.mean(x - y),
            permutation_type="samples",
            n_resamples=np.inf,
        ).pvalue
        < 0.05
    )
    assert expected and difference(agg, "b", "a", "tts", ["clean"], "mel_l1").endswith(" †")
    # Noise of ±0.3 per item hides a zero shift: no mark.
    assert "†" not in difference(agg, "c", "a", "tts", ["clean"], "mel_l1")
    assert change(agg, "a", "a+ft", "tts", "clean", "mel_l1")[2].endswith(" †")
    # Only over the seeds the cell shows: an "after" seed without items means no item test at all.
    mixed = [r if not (r["variant"] == "a+ft" and r["seed"] == 1) else {**r, "items": None} for r in all_rows]
    agg_mixed = {(a["variant"], a["task"], a["condition"], a["metric"]): a for a in aggregate(mixed)}
    assert item_values(agg_mixed, "a+ft", "tts", ["clean"], "mel_l1", [0, 1]) == ({}, 0)
    assert "†" not in change(agg_mixed, "a", "a+ft", "tts", "clean", "mel_l1")[2]
    # Test sets of other sizes cannot be paired by position.
    short = [{**r, "items": r["items"][:10]} if r["variant"] == "b" else r for r in all_rows]
    agg_short = {(a["variant"], a["task"], a["condition"], a["metric"]): a for a in aggregate(short)}
    assert item_values(agg_short, "b", "tts", ["clean"], "mel_l1", [0, 1])[1] == 10
    assert "†" not in difference(agg_short, "b", "a", "tts", ["clean"], "mel_l1")
    # The same items heard alike, one model silent on some (None): nothing to mark.
    same = [
        {**r, "variant": "d", "items": [None if i % 4 == 0 else x for i, x in enumerate(r["items"])]}
        for r in all_rows
        if r["variant"] == "a"
    ]
    agg_same = {(a["variant"], a["task"], a["condition"], a["metric"]): a for a in aggregate(all_rows + same)}
    assert "†" not in difference(agg_same, "d", "a", "tts", ["clean"], "mel_l1")

    # Right-or-wrong QA items of one seed: five more right answers and none lost is no mark (McNemar's
    # p = 0.0625; a t-test over the 24 items would mark it), six is.
    def qa_rows(variant, right):
        items = [1.0] * right + [0.0] * (24 - right)
        row = {"variant": variant, "seed": 0, "task": "qa", "condition": "clean", "metric": "accuracy"}
        return [{**row, "value": float(np.mean(items)), "n": 24, "items": items}]

    agg_qa = {
        (a["variant"], a["task"], a["condition"], a["metric"]): a
        for a in aggregate(qa_rows("q", 10) + qa_rows("q5", 15) + qa_rows("q6", 16))
    }
    assert difference(agg_qa, "q5", "q", "qa", ["clean"], "accuracy") == "+0.208"
    assert difference(agg_qa, "q6", "q", "qa", ["clean"], "accuracy") == "+0.250 †"
    # Rows without per-item values (runs scored before they were kept): the seed test alone, and the
    # report does not explain a mark it cannot give.
    from flow_omni.eval.document import to_markdown
    from flow_omni.eval.report import differences_blocks

    plain = [{k: v for k, v in r.items() if k != "items"} for r in all_rows]
    agg = {(a["variant"], a["task"], a["condition"], a["metric"]): a for a in aggregate(plain)}
    assert not has_items(agg) and "†" not in difference(agg, "b", "a", "tts", ["clean"], "mel_l1")
    assert "†" not in to_markdown(differences_blocks(agg, ["a", "b"], ["clean"]))
    assert "`†`" in to_markdown(differences_blocks(agg_same, ["a", "b"], ["clean"]))


def test_metrics_table_has_a_line_per_metric_and_a_column_per_variant():
    rows = [
        {"variant": v, "seed": s, "task": t, "condition": c, "metric": m, "value": x, "n": 2}
        for v, s, t, c, m, x in (
            ("continuous", 0, "asr", "clean", "cer", 0.2),
            ("continuous", 1, "asr", "clean", "cer", 0.4),
            ("continuous", 0, "tts", "clean", "mel_l1", 2.0),
            ("kmeans", 0, "asr", "clean", "cer", 0.1),
        )
    ]
    assert metrics_table(rows).splitlines() == [
        "| task | condition | metric | continuous | kmeans |",
        "|---|---|---|---|---|",
        "| asr | clean | cer | 0.300 ± 0.141 | 0.100 |",
        "| tts | clean | mel_l1 | 2.000 | — |",
    ]


def test_conditions_and_config_errors():
    cfg = RobustnessConfig(noise_kinds=["white", "babble"], snrs=[10, 0], other_conditions=["pitch@3"])
    assert cfg.conditions() == ["clean", "white@10", "white@0", "babble@10", "babble@0", "pitch@3"]
    from flow_omni.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown kind"):
        RobustnessConfig(other_conditions=["echo@3"])
    with pytest.raises(ConfigError, match="reverberation time must be in"):
        RobustnessConfig(other_conditions=["reverb@0"])
    with pytest.raises(ConfigError, match="names must be unique"):
        RobustnessConfig.from_dict({"variants": [{"name": "x"}, {"name": "x"}]})


def test_babble_talkers_are_synthesised_once_and_are_the_fixed_seeds(monkeypatch):
    """Babble under a condition mixes in the fixed synthetic talkers, made once per process: they took
    about half a second a call, and the benchmark mixes babble into every item of every babble cell."""
    import flow_omni.audio.augment as augment
    from flow_omni.audio.synth import synth_corpus
    from flow_omni.eval.heldout import apply_condition

    calls = []

    def counted(*args, **kwargs):
        calls.append(kwargs.get("sample_rate"))
        return synth_corpus(*args, **kwargs)

    monkeypatch.setattr(augment, "synth_corpus", counted)
    augment._babble_talkers.cache_clear()
    audio = 0.1 * torch.randn(12000, generator=torch.Generator().manual_seed(0))
    heard = [apply_condition(audio, "babble@5", seed=s) for s in (1, 2, 1)]
    assert calls == [24000]
    assert torch.equal(heard[0], heard[2]) and not torch.equal(heard[0], heard[1])
    talkers = synth_corpus(8, seed=12345, sample_rate=24000)
    assert torch.equal(heard[0], apply_condition(audio, "babble@5", seed=1, babble_pool=talkers))
    # A caller that changes its copy of the talkers changes no one else's.
    mine = augment.synthetic_babble_pool()
    mine[0].zero_()
    assert all(torch.equal(a, b) for a, b in zip(augment.synthetic_babble_pool(), talkers))
    augment._babble_talkers.cache_clear()  # the next user synthesises with the real function


def test_reverb_condition_is_a_deterministic_room_that_keeps_length_and_loudness():
    from flow_omni.eval.heldout import apply_condition

    t = torch.arange(24000) / 24000
    audio = 0.3 * torch.sin(2 * math.pi * 220 * t) * (t < 0.3)  # a tone burst, then silence
    wet = apply_condition(audio, "reverb@0.8", seed=7)
    assert wet.shape == audio.shape
    assert torch.equal(wet, apply_condition(audio, "reverb@0.8", seed=7))
    assert not torch.equal(wet, apply_condition(audio, "reverb@0.8", seed=8))
    assert float(wet.pow(2).mean()) == pytest.approx(float(audio.pow(2).mean()), rel=1e-4)
    # The room rings on after the burst has stopped: longer for the longer reverberation time.
    tail = {rt: float(apply_condition(audio, f"reverb@{rt}", seed=7)[9000:12000].abs().mean()) for rt in (0.3, 0.8)}
    assert 0 < tail[0.3] < tail[0.8]


def test_miniature_benchmark_writes_every_artefact(tmp_path, capsys):
    from flow_omni.cli import main

    out, corpus = tmp_path / "bench", tmp_path / "corpus"
    args = [
        "bench",
        "robustness",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        f"corpus={corpus}",
        "corpus_config={n_sentences: 12, n_qa: 16, n_interleaved: 0, test_fraction: 0.25}",
        "variants=[{name: continuous}, {name: kmeans, tokens: kmeans, quantizer: {codebook_size: 16, iterations: 5}}]",
        "recipe=null",
        "finetune_variants=[]",
        "seeds=[0, 1]",
        "train={max_steps: 3, data: {batch_size: 4}}",
        "noise_kinds=[white, babble]",
        "snrs=[10, 0]",
        "other_conditions=[pitch@2]",
        "max_items=2",
        "max_new_positions=16",
        "threads=1",
        "jobs=2",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed
    # Stage lines, also with --no-progress: what runs, how long it has run, and about how long it has left.
    lines = [ln for ln in printed.splitlines() if ln.startswith("[bench")]
    runs = ["continuous-seed0", "continuous-seed1", "kmeans-seed0", "kmeans-seed1"]
    assert [ln.split(" | ")[0] for ln in lines if ln.startswith("[bench ")] == [
        f"[bench 1/5] corpus: {corpus}",
        "[bench 2/5] speech encoder features: the runs train their speech encoder, so nothing is encoded beforehand",
        "[bench 3/5] training and scoring 4 runs, 2 side by side",
        "[bench 4/5] streaming latency of 4 runs, one at a time",
        "[bench 5/5] report",
    ]
    assert all(" elapsed, about " in ln for ln in lines if ln.startswith("[bench 3/5]") or ln.startswith("[bench 4/5]"))
    notes = [ln.split(" | ")[0] for ln in lines if ln.startswith("[bench] ") and " runs done)" in ln]
    assert sorted(n.split()[1] for n in notes) == runs and notes[-1].endswith("scored (4/4 runs done)")
    assert sorted(ln.split()[1] for ln in lines if "trained; scoring it" in ln) == runs
    assert lines[-1].startswith("[bench] done in ")
    report = (out / "report.md").read_text()
    conditions = ["clean", "white@10", "white@0", "babble@10", "babble@0", "pitch@2"]
    for table in ("ASR CER by condition", "QA accuracy by condition"):
        block = report.split(f"## {table}")[1].split("##")[0]
        for cond in conditions:
            row = next(line for line in block.splitlines() if line.startswith(f"| {cond} |"))
            assert row.count("±") == 2  # both variants, mean ± std over the two seeds
    assert "| unseen_voices |" in report and "## TTS" in report and "## Cost" in report
    data = json.loads((out / "results.json").read_text())
    # Each run's timing keeps the precision it trained in, as its config.yaml says (the report's budget line).
    for name, timing in data["timings"].items():
        run_config = yaml.safe_load((out / "runs" / name.replace("/", "-") / "config.yaml").read_text())
        assert timing["precision"] == run_config["precision"] != "auto"
    # 2 variants x 2 seeds x (ASR 2 metrics x (6 conditions + unseen) + TTS 2-3 metrics + QA 6 conditions)
    per_model = {(r["variant"], r["seed"]) for r in data["rows"]}
    assert per_model == {("continuous", 0), ("continuous", 1), ("kmeans", 0), ("kmeans", 1)}
    # Each item's value is kept (in the test set's order), and their mean is the cell's value.
    with_items = [r for r in data["rows"] if "items" in r]
    scored = {(r["task"], r["metric"]) for r in with_items}
    assert {("asr", "cer"), ("asr", "wer"), ("qa", "accuracy"), ("tts", "mel_l1")} <= scored
    for r in with_items:
        covered = [x for x in r["items"] if x is not None]
        assert len(r["items"]) == r["n"]
        if len(covered) == r["n"]:  # (a model silent on some prompts: its speech's rates on the set's scale)
            assert np.mean(covered) == pytest.approx(r["value"], abs=1e-5), r
    assert all(x is not None for r in with_items if r["task"] in ("asr", "qa") for x in r["items"])
    from flow_omni.eval.asr import WhisperASR

    if WhisperASR.available():  # spoken answers scored through Whisper (clean only by default)
        scored = {(r["condition"], r["metric"]) for r in data["rows"] if r["task"] == "qa"}
        assert ("clean", "speech_accuracy") in scored and ("white@0", "speech_accuracy") not in scored
        block = report.split("## QA accuracy of the spoken answer")[1].split("##")[0]
        assert "| clean |" in block and "| white@0 |" not in block  # no row of dashes for conditions not scored
        assert any(r["metric"] == "whisper_wer" for r in data["rows"]) or all(
            r["value"] == 0 for r in data["rows"] if r["metric"] == "spoke"
        )
    # Streaming latency, measured after the runs one at a time; a model that spoke has a positive time.
    for v, k in per_model:
        lat = json.loads((out / "runs" / f"{v}-seed{k}" / "latency.json").read_text())["rows"]
        assert all(r["task"] == "latency" and r["value"] > 0 for r in lat)
    with open(out / "results.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(data["rows"])
    for png in ("asr_cer_vs_snr_white.png", "asr_cer_vs_snr_babble.png", "qa_accuracy_vs_snr_babble.png"):
        assert (out / png).stat().st_size > 1000
    for variant in ("continuous", "kmeans"):
        wavs = {p.name for p in (out / "wavs" / variant).glob("*.wav")}
        assert {f"input_{c.replace('@', '_')}" for c in conditions} <= {w.rsplit("_", 1)[0] for w in wavs} | {
            "_".join(w.split("_")[:3]) for w in wavs
        } | {"_".join(w.split("_")[:2]) for w in wavs}
    assert "seed 0 of each variant" in report  # the samples come from the first seed's scoring
    # Samples from another seed's models, for a grid resumed from kept scores where the first seed's models
    # are gone: refused where samples are kept already, replaced with overwrite, the seed in samples.json.
    from flow_omni.bench.robustness import keep_samples
    from flow_omni.errors import FlowOmniError

    cfg = RobustnessConfig.load(out / "config.yaml")
    with pytest.raises(
        FlowOmniError, match="already holds the samples of continuous, kmeans; they are replaced only with overwrite"
    ):
        keep_samples(cfg, 1, progress=False)
    with pytest.raises(FlowOmniError, match="no run of seed 5 in .* is scored"):
        keep_samples(cfg, 5, progress=False)
    assert keep_samples(cfg, 1, overwrite=True, progress=False) == [out / "wavs" / v for v in ("continuous", "kmeans")]
    assert json.loads((out / "wavs" / "kmeans" / "samples.json").read_text())["seed"] == 1
    # Rerunning reuses the trained models and, with the same settings, their scores (a long benchmark resumes).
    stamp = (out / "runs" / "kmeans-seed1" / "model" / "model.safetensors").stat().st_mtime_ns
    scored = (out / "runs" / "kmeans-seed1" / "eval.json").stat().st_mtime_ns
    timed = (out / "runs" / "kmeans-seed1" / "latency.json").stat().st_mtime_ns
    assert main(args[:-1] + ["jobs=1"]) == 0
    lines = [ln.split(" | ")[0] for ln in capsys.readouterr().out.splitlines() if ln.startswith("[bench ")]
    assert lines == [  # nothing left to train or score: the reused work is named, not timed
        f"[bench 1/4] corpus: {corpus} is built",
        "[bench 2/4] speech encoder features: every run is trained and scored already",
        "[bench 3/4] streaming latency of 4 runs, one at a time",
        "[bench 4/4] report",
    ]
    assert (out / "runs" / "kmeans-seed1" / "eval.json").stat().st_mtime_ns == scored
    assert (out / "runs" / "kmeans-seed1" / "latency.json").stat().st_mtime_ns == timed
    assert json.loads((out / "results.json").read_text())["rows"] == data["rows"]
    assert "seed 1 of each variant" in (out / "report.md").read_text()
    # Kept scores alone (no models), put into a new folder, are reused for the same training settings,
    # also with the corpus at another path.
    moved = tmp_path / "moved"
    shutil.copytree(corpus, tmp_path / "corpus_copy")
    args[args.index(f"corpus={corpus}")] = f"corpus={tmp_path / 'corpus_copy'}"
    for run in (out / "runs").iterdir():
        (moved / "runs" / run.name).mkdir(parents=True)
        for name in ("eval.json", "latency.json"):
            (moved / "runs" / run.name / name).write_bytes((run / name).read_bytes())
    at = args.index("--out") + 1
    assert main(args[:at] + [str(moved)] + args[at + 1 :]) == 0
    lines = [ln.split(" | ")[0] for ln in capsys.readouterr().out.splitlines() if ln.startswith("[bench ")]
    assert lines[1] == "[bench 2/4] speech encoder features: every run is trained and scored already"
    assert json.loads((moved / "results.json").read_text())["rows"] == data["rows"]
    assert not any((moved / "runs").glob("*/model"))
    # ... but not for other training settings: that run trains again.
    assert (
        main(
            args[:at]
            + [str(moved)]
            + args[at + 1 : -1]
            + ["jobs=1", "train={max_steps: 2, data: {batch_size: 4}}", "seeds=[0]", "variants=[{name: continuous}]"]
        )
        == 0
    )
    assert (moved / "runs" / "continuous-seed0" / "model" / "model.safetensors").is_file()
    # That model is never scored as if trained with the first settings: the run refuses, in one line.
    assert main(args[:at] + [str(moved)] + args[at + 1 : -1] + ["jobs=1"]) == 2
    assert "holds a model trained with other settings" in capsys.readouterr().err
    args[args.index(f"corpus={tmp_path / 'corpus_copy'}")] = f"corpus={corpus}"
    assert main(args + ["tasks=[asr]", "snrs=[]", "other_conditions=[]", "unseen_voices=false"]) == 0
    assert (out / "runs" / "kmeans-seed1" / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    assert (out / "runs" / "kmeans-seed1" / "eval.json").stat().st_mtime_ns != scored  # new settings: rescored
    assert {r["task"] for r in json.loads((out / "results.json").read_text())["rows"]} == {"asr"}


def test_miniature_benchmark_fine_tunes_and_listens_through_units(tmp_path, capsys):
    """The grid's other parts: a variant that listens through discrete units of a frozen Whisper's outputs,
    and the noisy-domain fine-tune of chosen variants, scored under the same conditions and reported as
    before → after; each variant's difference from the first is reported too."""
    from flow_omni.cli import main

    out, corpus = tmp_path / "bench", tmp_path / "corpus"
    whisper = "{kind: whisper, whisper_d_model: 32, whisper_layers: 1, whisper_heads: 2, frozen: true, downsample: 2}"
    args = [
        "bench",
        "robustness",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        f"corpus={corpus}",
        "corpus_config={n_sentences: 12, n_qa: 16, n_interleaved: 0, test_fraction: 0.25}",
        "variants=[{name: continuous}, {name: units_in, encoder: {input_units: 8}}]",
        "recipe=null",
        "seeds=[0, 1]",
        f"train={{max_steps: 3, data: {{batch_size: 4}}, model: {{overrides: {{encoder: {whisper}}}}}}}",
        "finetune_variants=[units_in]",
        "finetune_share=0.67",
        "noise_kinds=[babble]",
        "snrs=[0]",
        "other_conditions=[reverb@0.8]",
        "tasks=[asr, qa]",
        "max_items=2",
        "max_new_positions=16",
        "threads=1",
        "external_asr=false",
    ]
    assert main(args) == 0
    capsys.readouterr()
    tuned = "units_in+noisy_ft"
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {(r["variant"], r["seed"]) for r in rows} == {
        (v, k) for v in ("continuous", "units_in", tuned) for k in (0, 1)
    }
    conditions = {r["condition"] for r in rows if r["variant"] == tuned and r["task"] == "asr"}
    assert conditions == {"clean", "babble@0", "reverb@0.8", "unseen_voices"}
    for k in (0, 1):
        ft = out / "runs" / f"units_in-seed{k}" / "noisy_finetune"
        config = yaml.safe_load((ft / "config.yaml").read_text())
        assert config["max_steps"] == 2 and config["model"]["init_from"].endswith(f"units_in-seed{k}/model")
        assert config["data"]["p_augment"] > 0 and config["eval"] is None
        base = FlowOmni.from_pretrained(out / "runs" / f"units_in-seed{k}" / "model")
        after = FlowOmni.from_pretrained(ft / "model")
        assert base.config.encoder.input_units == after.config.encoder.input_units == 8
        # The codebook stays as fitted for the base model; the unit embeddings are fine-tuned.
        assert torch.equal(base.encoder.units.codebooks, after.encoder.units.codebooks)
        assert not torch.equal(base.encoder.adapter.weight, after.encoder.adapter.weight)
    assert not (out / "runs" / "continuous-seed0" / "noisy_finetune").exists()
    report = (out / "report.md").read_text()
    block = report.split("## Noisy-domain fine-tune: before → after")[1].split("\n## ")[0]
    assert "| condition | units_in before | after | change |" in block
    assert next(ln for ln in block.splitlines() if ln.startswith("| babble@0 |")).count("±") == 2
    diffs = report.split("## Differences from continuous")[1].split("\n## ")[0]
    row = next(ln for ln in diffs.splitlines() if ln.startswith("| units_in |"))
    assert row.count("|") == 9 and ("+" in row or "-" in row)
    assert "units_in+noisy_ft" in report.split("## ASR CER by condition")[1]
    # Samples from seed 1's models take the fine-tuned model too, from its own folder.
    from flow_omni.bench.robustness import keep_samples

    cfg = RobustnessConfig.load(out / "config.yaml")
    kept = keep_samples(cfg, 1, overwrite=True, progress=False)
    assert [k.name for k in kept] == ["continuous", "units_in", tuned]
    assert json.loads((out / "wavs" / tuned / "samples.json").read_text())["seed"] == 1
    # Only models whose scores are kept speak: weights written after their scoring are not heard.
    weights = out / "runs" / "units_in-seed1" / "model" / "model.safetensors"
    stamp = weights.stat()
    os.utime(weights, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    assert [k.name for k in keep_samples(cfg, 1, overwrite=True, progress=False)] == ["continuous"]
    os.utime(weights, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    # A rerun with the same settings reuses every run, the fine-tunes included.
    scored = (out / "runs" / "units_in-seed1" / "eval.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "runs" / "units_in-seed1" / "eval.json").stat().st_mtime_ns == scored


def test_feature_stage_in_worker_processes_caches_what_one_process_would(tmp_path, monkeypatch):
    """The frozen encoder's features, computed before the runs by two worker processes, are the files and
    values one process computes, under the keys the first run looks up; a second call encodes nothing."""
    from safetensors.torch import load_file

    import flow_omni.bench.robustness as rb
    from flow_omni.data.corpus import CorpusConfig, build_corpus
    from flow_omni.data.features import FeatureCache

    corpus = tmp_path / "corpus"
    build_corpus(CorpusConfig(n_sentences=10, n_qa=6, n_interleaved=0), corpus, progress=False)
    whisper = {"kind": "whisper", "whisper_d_model": 32, "whisper_layers": 1, "whisper_heads": 2, "frozen": True}
    cfg = RobustnessConfig(
        out_dir=str(tmp_path / "bench"),
        corpus=str(corpus),
        recipe=None,
        train={"model": {"overrides": {"encoder": whisper}}},
        jobs=2,
        threads=1,
    )
    monkeypatch.setattr(rb, "ENCODE_CHUNK", 5)
    cache = corpus / "feature_cache"

    def cached() -> dict[str, torch.Tensor]:
        return {p.name: load_file(str(p))["features"] for p in cache.glob("*/*.safetensors")}

    files = len(rb._input_files(corpus))
    assert rb.fill_feature_cache(cfg, corpus, progress=False) == files > 10  # three chunks or more for two workers
    in_workers = cached()
    with monkeypatch.context() as m:  # nothing left to encode: no worker is started
        m.setattr(rb, "worker_pool", lambda jobs: pytest.fail("worker processes started for cached features"))
        assert rb.fill_feature_cache(cfg, corpus, progress=False) == 0
    shutil.rmtree(cache)
    assert rb.fill_feature_cache(cfg.merged({"jobs": 1}), corpus, progress=False) == files
    one_process = cached()
    assert len(in_workers) == files and in_workers.keys() == one_process.keys()
    for key, feats in one_process.items():
        torch.testing.assert_close(in_workers[key], feats, rtol=1e-4, atol=1e-5)
    # ... under the keys the first run's own encoder asks for, built as training builds it.
    import lightning as L

    from flow_omni.training.train import build_model

    config = rb.run_config(cfg, cfg.variants[0], cfg.seeds[0], corpus, progress=False)
    L.seed_everything(config.seed, workers=True, verbose=False)
    model = build_model(config)
    reader = FeatureCache(cache, model.config.speech.mel)
    for path in rb._input_files(corpus):
        rb.whisper_features(reader, model.encoder, path)
    assert reader.stats.misses == 0 and reader.stats.hits == files


def test_workers_stop_when_the_benchmark_is_killed(tmp_path):
    """SIGKILL of the benchmark process must not leave workers training on for hours."""
    import os
    import signal
    import subprocess
    import sys
    import time

    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import time\n"
                "from flow_omni.bench.pool import worker_pool\n"
                "pool = worker_pool(1)\n"
                "print(pool.submit(__import__('os').getpid).result(), flush=True)\n"
                "pool.submit(time.sleep, 600)\n"
                "time.sleep(600)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    worker = int(parent.stdout.readline())
    os.kill(worker, 0)  # alive
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(worker, signal.SIGKILL)
    raise AssertionError("the worker outlived the benchmark process by 20 s")


def test_ceiling_cache_transcribes_each_reference_once(tmp_path):
    """Scoring several checkpoints with one ``ceiling_cache`` hears each resynthesised reference once, and
    the ceiling it reports is the one computed without the cache."""
    import torch

    from flow_omni.data.corpus import CorpusConfig, build_corpus
    from flow_omni.data.manifest import read_manifest
    from flow_omni.eval.robustness import evaluate_model
    from flow_omni.models.flow_omni import FlowOmni, FlowOmniConfig
    from flow_omni.vocoder.griffinlim import GriffinLim

    build_corpus(CorpusConfig(n_sentences=8, n_qa=0, n_interleaved=0, test_fraction=0.25), tmp_path, progress=False)
    test = [e for e in read_manifest(tmp_path / "test.jsonl") if not e.answer_text][:2]

    class Listener:  # stands in for Whisper: hears the audio's length, and counts what it was asked
        calls = 0

        def transcribe(self, audio, sr):
            Listener.calls += 1
            return "word " * (1 + int(audio.numel() / sr))

    torch.manual_seed(0)
    model = FlowOmni(FlowOmniConfig.preset("tiny"))
    model.fit_speech_stats([torch.randn(24000) * 0.1])
    vocoder, cache = GriffinLim(n_iter=4).decode, {}
    kw = dict(tasks=["tts"], max_new_positions=4, vocoder=vocoder, external_asr=Listener())
    plain = evaluate_model(model, test, [], ["clean"], **kw)
    without = Listener.calls
    for _ in range(2):
        cached = evaluate_model(model, test, [], ["clean"], ceiling_cache=cache, **kw)
    assert set(cache) == {e.t2a_audio for e in test}
    assert Listener.calls - without == 2 * without - len(test)  # the second scoring hears the references no more

    def ceiling(rows):
        return next(r["value"] for r in rows if r["metric"] == "whisper_wer_ceiling")

    assert ceiling(cached) == ceiling(plain)
    assert not any(r["metric"] == "whisper_wer_tokens" for r in plain)  # a continuous model speaks its tokens


def test_a_model_that_speaks_codes_is_also_scored_against_its_codes_ceiling(tmp_path):
    """For a k-means model the listener also hears each reference as the codebook holds it (its round
    trip, decoded), once per reference and codebook when a ``ceiling_cache`` is kept."""
    import torch

    from flow_omni.audio.io import load_audio
    from flow_omni.data.corpus import CorpusConfig, build_corpus
    from flow_omni.data.manifest import read_manifest
    from flow_omni.eval.robustness import evaluate_model, token_held_reference
    from flow_omni.models.flow_omni import FlowOmni, FlowOmniConfig
    from flow_omni.vocoder.griffinlim import GriffinLim

    build_corpus(CorpusConfig(n_sentences=8, n_qa=0, n_interleaved=0, test_fraction=0.25), tmp_path, progress=False)
    test = [e for e in read_manifest(tmp_path / "test.jsonl") if not e.answer_text][:2]
    torch.manual_seed(0)
    model = FlowOmni(FlowOmniConfig.preset("tiny", tokens="kmeans", quantizer={"codebook_size": 4, "iterations": 3}))
    tone = torch.sin(torch.arange(24000) * 0.05) * 0.1
    model.fit_speech_stats([tone])
    model.fit_speech_head([model.encode_speech(tone)])
    tok = model.speech_tokenizer
    ref = tok.mel(load_audio(test[0].t2a_audio))
    held = token_held_reference(model, ref)
    q = model.speech.quantizer
    assert torch.equal(held, tok.decode(q.decode(q.encode(tok.encode_mel(ref))), num_frames=ref.shape[-1]))
    assert held.shape == ref.shape and not torch.allclose(held, ref, atol=0.1)

    vocoder, cache = GriffinLim(n_iter=4).decode, {}
    held_audio = [(vocoder(token_held_reference(model, tok.mel(load_audio(e.t2a_audio)))), e.text) for e in test]

    class Listener:  # stands in for Whisper: understands the held references only, and counts its calls
        calls = 0

        def transcribe(self, audio, sr):
            Listener.calls += 1
            return next((text for a, text in held_audio if torch.equal(a, audio)), "zzz")

    kw = dict(tasks=["tts"], max_new_positions=4, vocoder=vocoder, external_asr=Listener(), ceiling_cache=cache)
    rows = {r["metric"]: r["value"] for r in evaluate_model(model, test, [], ["clean"], **kw)}
    assert rows["whisper_wer_tokens"] == 0.0 and rows["whisper_wer_ceiling"] == 1.0
    assert sum("#tokens:" in k for k in cache) == len(test)
    calls = Listener.calls
    evaluate_model(model, test, [], ["clean"], **kw)
    assert Listener.calls - calls == calls - 2 * len(test)  # the references, held or not, are heard once


def test_evaluate_model_samples_with_the_generation_settings_it_is_given(tmp_path):
    """``generation`` reaches every generate call of T→A scoring (the speech and its own-ASR read-back),
    on top of greedy decoding."""
    import torch

    from flow_omni.data.corpus import CorpusConfig, build_corpus
    from flow_omni.data.manifest import read_manifest
    from flow_omni.eval.robustness import evaluate_model
    from flow_omni.models.flow_omni import FlowOmni, FlowOmniConfig
    from flow_omni.vocoder.griffinlim import GriffinLim

    build_corpus(CorpusConfig(n_sentences=4, n_qa=0, n_interleaved=0, test_fraction=0.5), tmp_path, progress=False)
    test = [e for e in read_manifest(tmp_path / "test.jsonl") if not e.answer_text][:2]
    from flow_omni.layout import STATE_GEN, STATE_START

    torch.manual_seed(0)
    model = FlowOmni(FlowOmniConfig.preset("tiny"))
    model.fit_speech_stats([torch.randn(24000) * 0.1])
    with torch.no_grad():  # speak at once, so that its speech is read back by its own ASR too
        model.state_head.bias[STATE_START] = model.state_head.bias[STATE_GEN] = 100.0
    calls, generate = [], model.generate

    def spy(prompts, **settings):
        calls.append(settings)
        return generate(prompts, **settings)

    model.generate = spy
    evaluate_model(
        model,
        test,
        [],
        ["clean"],
        tasks=["tts"],
        max_new_positions=6,
        vocoder=GriffinLim(n_iter=2).decode,
        generation={"steps": 2, "solver": "midpoint", "cfg_scale": 1.5},
    )
    assert len(calls) == 2  # the speech, then its read-back
    for settings in calls:
        assert settings["steps"] == 2 and settings["solver"] == "midpoint" and settings["cfg_scale"] == 1.5
        assert settings["speech_temperature"] == 0.0 and settings["text_temperature"] == 0.0


def test_report_names_the_settings_the_budget_changes_from_the_recipe():
    # The demo trains the learn recipe with its own lr and task mix: the report must not let a reader
    # take the recipe's own settings for what was run.
    demo = RobustnessConfig.demo()
    text = _budget(demo, {"continuous/seed0": {"train_s": 1.0, "precision": "32-true"}})
    assert text.startswith("recipe learn, 700 steps, auto (32-true in training)")
    assert "lr 0.001" in text
    assert "tasks A2T 3 : T2A 1 : A2A 1" in text
    assert _budget(RobustnessConfig(recipe=None, train={"max_steps": 10})) == "default training settings, 10 steps"


def test_report_budget_says_the_precision_the_runs_trained_in_not_what_this_machine_would_choose():
    # `auto` resolves on the machine that trains; a report written elsewhere (robustness_summary.py on
    # committed results) must not resolve it again.
    demo = RobustnessConfig.demo()
    mixed = {"a/seed0": {"precision": "bf16-mixed"}, "b/seed0": {"precision": "32-true"}}
    assert "auto (32-true, bf16-mixed in training)" in _budget(demo, mixed)
    assert "auto (the precision it chose was not recorded by these runs)" in _budget(demo, {"a/seed0": {}})
    named = RobustnessConfig(recipe=None, train={"precision": "bf16-mixed"})
    assert _budget(named) == "default training settings, bf16-mixed"
    assert _budget(named, {"a/seed0": {"precision": "bf16-mixed"}}) == "default training settings, bf16-mixed"


def test_what_was_learned_reads_speech_against_its_ceilings():
    """The report's plain-words line judges TTS against the resynthesised reference (1.5x bar) and names the
    ceiling of the model's codes when it speaks codes."""
    from flow_omni.eval.report import learned

    def agg(**tts):
        return {("m", "tts", "clean", k): {"mean": v} for k, v in tts.items()}

    line = learned(agg(whisper_wer=0.45, whisper_wer_ceiling=0.33), "m")
    assert "TTS Whisper WER 0.45 against 0.33 for the resynthesised reference, intelligible" in line
    assert "codes" not in line
    line = learned(agg(whisper_wer=0.6, whisper_wer_ceiling=0.33, whisper_wer_tokens=0.55), "m")
    assert "against 0.33 for the resynthesised reference and 0.55 for the reference in its codes, not yet" in line


def test_report_names_the_seed_its_samples_come_from(tmp_path):
    """The sample audio's seed, from each ``samples.json`` (the benchmark's first seed where it names none),
    and the variants that have no samples."""
    from flow_omni.eval.report import _sample_seeds
    from flow_omni.eval.samples import SampleLog

    for name, seed in (("a", 2), ("b", 2), ("c", None), ("d", 1)):
        SampleLog(tmp_path / name, 24000, seed=seed).write()
    kept = {v: tmp_path / v for v in "abcd"}
    assert _sample_seeds({v: kept[v] for v in "ab"}, ["a", "b"], 0) == "seed 2 of each variant"
    assert _sample_seeds({v: kept[v] for v in "ab"}, ["a", "b", "e"], 0) == (
        "seed 2 of each variant with samples (none kept for e)"
    )
    assert _sample_seeds(kept, list("abcd"), 0) == "seed 2 of a, 2 of b, 0 of c, 1 of d"


def _script(path):
    """A script of ``benchmarks/`` as a module, to call its ``main(argv)`` in this process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grid_summary_script_reads_the_kept_results(tmp_path, capsys):
    """``benchmarks/robustness_summary.py`` on the committed grid results: the tables of the report over the
    runs kept so far; with ``--report``, the full report; one line with exit code 2 for bad input, before
    anything is printed or written."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script, results = root / "benchmarks" / "robustness_summary.py", root / "benchmarks" / "results" / "robustness.json"
    done = subprocess.run([sys.executable, script, "--json", results], capture_output=True, text=True, check=True)
    kept = json.loads(results.read_text())
    assert f"{len(kept['runs_finished'])} of {len(kept['runs_planned'])} runs scored" in done.stdout
    assert "## Differences from continuous" in done.stdout and "| kmeans |" in done.stdout
    assert "## Noisy-domain fine-tune: before → after" in done.stdout
    summary, samples = _script(script), _script(root / "benchmarks" / "robustness_samples.py")

    def refused(main, argv, says):
        assert main(argv) == 2
        printed = capsys.readouterr()
        assert printed.out == "" and printed.err.count("\n") == 1 and says in printed.err, printed.err

    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": []}')
    refused(summary.main, ["--json", str(bad)], "not a results JSON of benchmarks/robustness_grid.py")
    refused(summary.main, ["--json", str(results), "--overwrite"], "expected --report with it")
    # The samples script needs a benchmark's folder.
    refused(samples.main, ["--out", str(tmp_path), "--seed", "0"], "has no config.yaml")
    # --report: the full report of the kept runs with this code, in a folder of one's choosing.
    out = tmp_path / "report"
    args = ["--json", str(results), "--report", str(out)]
    assert summary.main(args) == 0
    assert f"page:   {out / 'report.html'}" in capsys.readouterr().err
    text = (out / "report.md").read_text()
    assert text.splitlines()[2].startswith(f"{len(kept['runs_finished'])} of {len(kept['runs_planned'])} runs scored")
    assert "## Differences from continuous" in text and "## Cost" in text and (out / "report.html").is_file()
    assert json.loads((out / "results.json").read_text())["rows"] == kept["rows"]
    assert (out / "asr_cer_vs_snr_babble.png").stat().st_size > 1000
    # A report already there is not replaced without --overwrite: nothing in the folder changes, and a
    # folder holding only a plot of that name is refused too.
    (out / "report.md").write_text("mine")
    files = {f.name: f.read_bytes() for f in out.iterdir()}
    refused(summary.main, args, "holds report.md, report.html, results.json, results.csv, 9 plot(s)")
    assert {f.name: f.read_bytes() for f in out.iterdir()} == files
    plot = tmp_path / "plots" / "asr_cer_vs_snr_white.png"
    plot.parent.mkdir()
    plot.write_bytes(b"mine")
    refused(summary.main, ["--json", str(results), "--report", str(plot.parent)], "holds 1 plot(s) *_vs_snr_*.png")
    assert [f.name for f in plot.parent.iterdir()] == [plot.name] and plot.read_bytes() == b"mine"
    assert summary.main(args + ["--overwrite"]) == 0
    assert (out / "report.md").read_text() == text
    capsys.readouterr()
    # A run without the timing the cost table shows: refused before a file is written.
    broken = json.loads(results.read_text())
    del broken["runs"][kept["runs_finished"][0]]["timing"]["parameters"]
    bad.write_text(json.dumps(broken))
    refused(summary.main, ["--json", str(bad), "--report", str(tmp_path / "new")], "no usable grid settings")
    assert not (tmp_path / "new").exists()
