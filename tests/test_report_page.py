"""report.html, the listening page: the same tables as report.md, escaped text, and in headless Chromium every
player loads, every plot shows and nothing logs an error."""

from __future__ import annotations

import re

from browser import check_page

from flow_omni.audio.synth import synth_speech
from flow_omni.eval.document import Heading, Listening, Table, Text, inline, to_html, to_markdown
from flow_omni.eval.samples import SampleLog, listening


def _md_cells(md: str) -> list[str]:
    """Every cell of every Markdown table in ``md``."""
    return [c.strip() for line in md.splitlines() if line.startswith("| ") for c in line.strip("|").split(" | ")]


def test_text_is_escaped_and_tables_match_the_markdown():
    hostile = '<script>alert("x")</script> & `code`'
    blocks = [Heading(hostile, 1), Text([hostile]), Table(["a<b", "c"], [["1 ± 2", hostile]])]
    page = to_html(blocks, hostile)
    assert "<script>" not in page and "&lt;script&gt;" in page and "<code>code</code>" in page
    # Bold as in the Markdown; the single * that marks a tested difference is left alone.
    assert inline("**ASR CER**: +0.417 * and -0.398 *") == "<strong>ASR CER</strong>: +0.417 * and -0.398 *"
    for cell in _md_cells(to_markdown(blocks)):
        assert f"<td>{inline(cell)}</td>" in page or f"<th>{inline(cell)}</th>" in page


def test_listening_page_lines_up_inputs_and_each_models_output(tmp_path, chromium):
    """Two models' samples side by side: the input once (both heard the same), each output with its texts; the
    players load in Chromium. (The miniature benchmark's models are too briefly trained to speak at all.)"""
    for k, name in enumerate(("before", "after")):
        log = SampleLog(tmp_path / "wavs" / name, 24000)
        for cond in ("clean", "white@0"):
            record = log.add("qa", cond, "q1", "five", prompt="what is <two> plus three?", text=f"fi{k}")
            record["input"] = log.save(f"qa_question_{cond.replace('@', '_')}_q1.wav", synth_speech(0.8, seed=1))
            if name == "after":
                record["output"] = log.save(f"qa_answer_{cond}_q1.wav", synth_speech(0.5, seed=2))
        log.write()
    listen = listening(tmp_path, {"before": tmp_path / "wavs/before", "after": tmp_path / "wavs/after"})
    assert isinstance(listen, Listening) and [r.label for r in listen.items[0].rows] == ["clean", "white@0"]
    page = tmp_path / "report.html"
    page.write_text(to_html([Heading("listening"), listen], "listening"))
    text = page.read_text()
    assert "what is &lt;two&gt; plus three?" in text and text.count("no speech") == 2  # `before` stayed silent
    state = check_page(chromium, page, tmp_path / "listening.png")
    # Per condition: the input (from the first model only), the after model's answer.
    assert sorted(a["src"] for a in state["audio"]) == sorted(
        [f"wavs/before/qa_question_{c}_q1.wav" for c in ("clean", "white_0")]
        + [f"wavs/after/qa_answer_{c}_q1.wav" for c in ("clean", "white@0")]
    )
    assert all(abs(a["duration"] - d) < 0.01 for a, d in zip(state["audio"], (0.8, 0.5, 0.8, 0.5)))


def test_miniature_benchmark_page_in_chromium(tmp_path, capsys, chromium):
    from flow_omni.cli import main

    out = tmp_path / "bench"
    args = [
        "bench",
        "robustness",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        f"corpus={tmp_path / 'corpus'}",
        "corpus_config={n_sentences: 8, n_qa: 8, n_interleaved: 0, test_fraction: 0.25}",
        "variants=[{name: continuous}, {name: kmeans, tokens: kmeans, quantizer: {codebook_size: 16, iterations: 5}}]",
        "recipe=null",
        "finetune_variants=[]",
        "seeds=[0]",
        "train={max_steps: 3, data: {batch_size: 4}}",
        "noise_kinds=[white]",
        "snrs=[0]",
        "other_conditions=[pitch@2]",
        "max_items=2",
        "max_new_positions=16",
        "threads=1",
        "external_asr=false",
    ]
    assert main(args) == 0
    page = out / "report.html"
    assert f"page:    {page}" in capsys.readouterr().out
    text = page.read_text()
    for cell in _md_cells((out / "report.md").read_text()):  # the same numbers as report.md
        assert f"<td>{inline(cell)}</td>" in text or f"<th>{inline(cell)}</th>" in text, cell
    state = check_page(chromium, page, tmp_path / "report.png")
    assert {i["src"] for i in state["img"]} == {p.name for p in out.glob("*.png")}
    # A player per input as heard: QA and ASR under each condition, and the unseen-voice input; the variants'
    # outputs are heard once they speak (these, trained for 3 steps, do not).
    heard = {a["src"] for a in state["audio"]}
    for cond in ("clean", "white_0", "pitch_2"):
        assert any(re.fullmatch(rf"wavs/continuous/qa_question_{cond}_qa-\d+\.wav", s) for s in heard), heard
        assert any(re.fullmatch(rf"wavs/continuous/input_{cond}_sent-\d+\.wav", s) for s in heard), heard
    assert any(s.startswith("wavs/continuous/input_unseen_voices_") for s in heard)
    for variant in ("continuous", "kmeans"):  # each variant's transcripts, in its own column
        assert "transcript:" in text and (out / "wavs" / variant / "samples.json").is_file()
