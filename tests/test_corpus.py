"""espeak-ng synthesis, text generators and the synthetic corpus builder (real synthesis, no mocks)."""

import filecmp
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import autocorr_f0

from flow_omni.data.corpus import (
    HELDOUT_VARIANTS,
    HELDOUT_VOICES,
    SPLITS,
    WAV_DIR,
    WORDS_NAME,
    CorpusConfig,
    CorpusError,
    build_corpus,
    make_plan,
)
from flow_omni.data.corpus import _read_words as read_words
from flow_omni.data.espeak import (
    DEFAULT_MARGIN_SECONDS,
    ENGLISH_LANGUAGES,
    ENGLISH_VARIANTS,
    ESPEAK_SAMPLE_RATE,
    Espeak,
    EspeakError,
    UnknownVoiceError,
    VoiceSpec,
    default_voices,
    get_espeak,
)
from flow_omni.data.manifest import read_manifest
from flow_omni.data.texts import (
    DAYS,
    FACTS,
    MONTHS,
    QA_CATEGORIES,
    generate_document,
    generate_qa,
    generate_sentences,
    normalize_text,
    number_to_words,
    score_answer,
    words_to_number,
)
from flow_omni.data.validate import validate_manifest
from flow_omni.errors import ConfigError, FlowOmniError

SR = 24000
TEXT = "the quick brown fox jumps over the lazy dog"
VOICED = "we are all alone in our lovely yellow room"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def es() -> Espeak:
    return get_espeak()


# ---- espeak ----------------------------------------------------------------------------------


def test_synthesis_is_deterministic_24k_and_audible(es):
    a = es.synthesize(TEXT, "en-us+m3", rate_wpm=160, pitch=40)
    es.synthesize("something else entirely, to disturb any state", "en+f3", pitch=80)
    b = es.synthesize(TEXT, "en-us+m3", rate_wpm=160, pitch=40)
    assert a.dtype == torch.float32 and a.dim() == 1
    assert torch.equal(a, b)
    # 24 kHz: the output length is the trimmed native length resampled by 24000/22050.
    raw = es.synthesize_native(TEXT, "en-us+m3", rate_wpm=160, pitch=40)
    loud = np.flatnonzero(np.abs(raw.astype(np.int32)) >= 64)
    native = loud[-1] + 1 - loud[0] + 2 * round(0.05 * ESPEAK_SAMPLE_RATE)
    assert abs(a.shape[0] - native * SR / ESPEAK_SAMPLE_RATE) <= 1
    assert 1.5 < a.shape[0] / SR < 5.0
    assert float(a.abs().max()) > 0.1
    assert float(a.pow(2).mean().sqrt()) > 0.01


def test_margin_is_exact_and_duration_grows_with_text(es):
    short = es.synthesize("hello", "en-us")
    long = es.synthesize("hello there, how are you doing on this fine morning", "en-us")
    assert long.shape[0] > 3 * short.shape[0]
    wide = es.synthesize("hello", "en-us", margin_seconds=0.15)
    assert abs(wide.shape[0] - short.shape[0] - 2 * 0.10 * SR) <= 2
    assert float(wide[: int(0.09 * SR)].abs().max()) < 0.01  # the added margin is silence


def test_voices_and_pitch_change_the_audio(es):
    m1 = es.synthesize(TEXT, "en-us+m1")
    f2 = es.synthesize(TEXT, "en-us", variant="f2")
    assert m1.shape != f2.shape or not torch.equal(m1, f2)
    low = autocorr_f0(es.synthesize(VOICED, "en-us+m3", pitch=20).numpy(), SR)
    high = autocorr_f0(es.synthesize(VOICED, "en-us+m3", pitch=80).numpy(), SR)
    assert high > 1.3 * low, (low, high)
    assert autocorr_f0(f2.numpy(), SR) > 1.3 * autocorr_f0(m1.numpy(), SR)


def test_voice_lists_and_errors(es):
    variants = es.list_variants()
    assert {"m1", "f3", "klatt"} <= set(variants) and len(variants) > 50
    assert {"en-us", "en-gb-x-rp", "en-029"} <= set(es.list_languages())
    for v in default_voices():
        es.check_voice(v)
    assert len(default_voices()) == len(ENGLISH_LANGUAGES) * len(ENGLISH_VARIANTS)
    assert str(VoiceSpec.parse("EN-US+f3")) == "en-us+f3"
    with pytest.raises(UnknownVoiceError, match="en-us"):
        es.synthesize("hi", "en-usa")
    with pytest.raises(UnknownVoiceError, match="variant 'f33'"):
        es.synthesize("hi", "en-us+f33")
    with pytest.raises(UnknownVoiceError, match="already names a variant"):
        es.synthesize("hi", "en-us+f3", variant="m1")
    with pytest.raises(EspeakError, match=r"rate_wpm must be an integer in \[80, 450\]"):
        es.synthesize("hi", rate_wpm=20)
    with pytest.raises(EspeakError, match="non-empty"):
        es.synthesize("   ")
    with pytest.raises(EspeakError, match="no audible speech"):
        es.synthesize("...", "en-us")
    with pytest.raises(EspeakError, match="not found"):
        Espeak(library_path="/nonexistent/libespeak-ng.so")
    assert issubclass(UnknownVoiceError, FlowOmniError) and issubclass(EspeakError, FlowOmniError)


# ---- texts -----------------------------------------------------------------------------------


def test_sentences_are_deterministic_clean_and_varied():
    a, b, c = generate_sentences(300, 5), generate_sentences(300, 5), generate_sentences(300, 6)
    assert a == b and a != c
    assert len(set(a)) == 300
    for s in a:
        assert re.fullmatch(r"[a-z][a-z ,]*[a-z][.?]", s), s
    vocab = {w for s in a for w in re.findall(r"[a-z]+", s)}
    assert len(vocab) > 350
    doc = generate_document(3, 4)
    assert doc == generate_document(3, 4) and doc.count(".") + doc.count("?") == 4


def test_qa_answers_are_correct():
    items = generate_qa(400, 11)
    assert items == generate_qa(400, 11) and items != generate_qa(400, 12)
    assert [i.category for i in items[:8]] == list(QA_CATEGORIES) * 2
    facts = {q + "?": a for q, a in FACTS}
    assert len(facts) == 30
    for it in items:
        q, ans = it.question, it.answer
        assert q.endswith("?") and not re.search(r"\d", q + ans)
        if it.category == "arithmetic":
            m = re.fullmatch(r"what is (.+) (plus|minus|times) (.+)\?", q)
            a, b = words_to_number(m.group(1)), words_to_number(m.group(3))
            expected = {"plus": a + b, "minus": a - b, "times": a * b}[m.group(2)]
            assert 0 <= expected <= 20 and words_to_number(ans) == expected, (q, ans)
        elif it.category == "counting":
            m = re.fullmatch(r"how many words are in (.+)\?", q)
            assert words_to_number(ans) == len(m.group(1).split()), (q, ans)
        elif it.category == "ordering":
            if m := re.fullmatch(r"which is (larger|smaller), (.+) or (.+)\?", q):
                a, b = words_to_number(m.group(2)), words_to_number(m.group(3))
                assert words_to_number(ans) == (max(a, b) if m.group(1) == "larger" else min(a, b)), (q, ans)
            else:
                m = re.fullmatch(r"what (day|month|number) comes (after|before) (.+)\?", q)
                step = 1 if m.group(2) == "after" else -1
                if m.group(1) == "number":
                    assert words_to_number(ans) == words_to_number(m.group(3)) + step, (q, ans)
                else:
                    seq = DAYS if m.group(1) == "day" else MONTHS
                    assert seq[(seq.index(m.group(3)) + step) % len(seq)] == ans, (q, ans)
        else:
            assert facts[q] == ans


def test_normalize_and_score_answer():
    assert normalize_text("It's 7!  The   Answer-is: 21, (café) 250") == "its seven the answer is twenty one cafe 250"
    assert [number_to_words(n) for n in (0, 13, 40, 99, 100)] == [
        "zero",
        "thirteen",
        "forty",
        "ninety nine",
        "one hundred",
    ]
    assert all(words_to_number(number_to_words(n)) == n for n in range(101))
    for hyp in ["seven", "Seven.", "7", "the answer is seven", "It's 7!", "i think it is seven", "um, seven"]:
        assert score_answer(hyp, "seven"), hyp
    for hyp in ["seven or eight", "seventeen", "not seven", "", "the answer is", "seven seven", "eight"]:
        assert not score_answer(hyp, "seven"), hyp
    assert score_answer("It is twenty-four.", "twenty four") and score_answer("a cow", "cow")
    assert not score_answer("blue sky", "blue")


# ---- corpus ----------------------------------------------------------------------------------


def small_config(seed: int = 0, **kw) -> CorpusConfig:
    base = dict(
        seed=seed, n_sentences=6, n_qa=5, n_interleaved=2,
        valid_fraction=0.2, test_fraction=0.2, unseen_fraction=0.2,
        voices=["en-us+m1", "en+f2", "en-gb-x-rp+klatt", "en-gb-x-gbclan+m5"], heldout_voices=["en-us+f5", "en+m7"],
        answer_voice="en-us+m3", doc_sentences=(2, 2), span_words=(4, 8),
    )  # fmt: skip
    base.update(kw)
    return CorpusConfig(**base)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "a"
    report = build_corpus(small_config(), out, progress=False)
    return out, report


def test_plan_size_and_report(built):
    out, report = built
    plan = make_plan(small_config())
    many_voice = make_plan(small_config(one_output_voice=False))
    assert 15 <= len(many_voice.utterances) <= 25
    # One output voice adds one WAV per distinct entry text (none of them is also an answer here).
    assert len(plan.utterances) == len(many_voice.utterances) + len({e.main.text for e in plan.entries})
    assert report.complete and report.n_utterances == len(plan.utterances) == report.synthesized
    assert report.reused == 0 and report.throughput > 0 and report.audio_seconds > 10
    assert sum(sum(k.values()) for k in report.counts.values()) == 6 + 5 + 2
    assert "complete" in str(report) and "WAVs" in str(report)
    assert CorpusConfig.load(out / "corpus.json") == small_config()


def test_build_is_byte_identical_and_seed_dependent(built, tmp_path):
    out, _ = built
    build_corpus(small_config(), tmp_path / "b", progress=False)
    assert tree(out) == tree(tmp_path / "b")
    build_corpus(small_config(seed=1), tmp_path / "c", progress=False)
    other = tree(tmp_path / "c")
    assert other["train.jsonl"] != tree(out)["train.jsonl"]
    assert other["wavs/sent-000000.wav"] != tree(out)["wavs/sent-000000.wav"]


def test_interrupted_then_resumed_equals_straight_build(built, tmp_path):
    out, full = built
    part = build_corpus(small_config(), tmp_path / "r", progress=False, stop_after=7)
    assert not part.complete and part.synthesized == 7 and "INCOMPLETE" in str(part)
    assert not list((tmp_path / "r").glob("*.jsonl"))  # manifests only once complete
    assert len(list((tmp_path / "r" / "wavs").glob("*.wav"))) == 7
    (tmp_path / "r" / "wavs" / ".sent-000099.wav.abc.tmp").write_bytes(b"half")  # a killed write
    rest = build_corpus(small_config(), tmp_path / "r", progress=False)
    assert rest.complete and rest.reused == 7 and rest.synthesized == full.n_utterances - 7
    assert tree(out) == tree(tmp_path / "r")
    again = build_corpus(small_config(), tmp_path / "r", progress=False, stop_after=0)
    assert again.complete and again.synthesized == 0 and again.reused == full.n_utterances
    assert filecmp.cmp(out / "train.jsonl", tmp_path / "r" / "train.jsonl", shallow=False)


def test_manifests_audio_and_voices(built):
    out, _ = built
    cfg = small_config()
    manifests = {s: read_manifest(out / f"{s}.jsonl") for s in SPLITS}
    assert all(manifests[s] for s in SPLITS)
    ids = [e.id for m in manifests.values() for e in m]
    assert len(ids) == len(set(ids)) == 13
    for split, entries in manifests.items():
        for e in entries:
            kind = e.meta["kind"]
            paths = [e.audio, e.target_audio] + ([e.answer_audio] if e.answer_audio else [])
            paths += [s.audio for s in e.segments or [] if s.audio]
            for p in paths:
                assert Path(p).is_file(), p
                info = sf.info(p)
                assert info.samplerate == SR and info.channels == 1 and info.subtype == "PCM_16"
            assert abs(sf.info(e.audio).frames / SR - e.duration) < 1e-5
            assert abs(sf.info(e.target_audio).frames / SR - e.target_duration) < 1e-5
            assert e.meta["target_speaker"] == "en-us+m3" and e.target_audio != e.audio
            # word onsets of every spoken text, the first at the margin (espeak gives none to some short
            # unstressed words, "the" in "in the farm", and two to a number read as two words)
            for words, text, seconds in (
                (e.alignment, e.text, e.duration),
                (e.target_alignment, e.text, e.target_duration),
                (e.answer_alignment, e.answer_text, e.answer_duration),
            ):
                if text is None or e.answer_audio is None and words is e.answer_alignment:
                    continue
                assert len(words) >= 0.7 * len(text.split()) and words[0][1] < 0.1 and words[-1][1] < seconds
            voices = cfg.heldout_voices if split == "test_unseen_voices" else cfg.voices
            assert e.speaker in voices
            assert cfg.rate_range[0] <= e.meta["rate"] <= cfg.rate_range[1]
            assert cfg.pitch_range[0] <= e.meta["pitch"] <= cfg.pitch_range[1]
            if kind == "qa":
                assert e.meta["category"] in QA_CATEGORIES
                assert e.meta["answer_speaker"] == "en-us+m3"
                assert Path(e.answer_audio).name == "answer-" + e.answer_text.replace(" ", "_") + ".wav"
                assert abs(sf.info(e.answer_audio).frames / SR - e.answer_duration) < 1e-5
            elif kind == "interleaved":
                assert " ".join(s.text for s in e.segments) == e.text
                spoken = [s.audio is not None for s in e.segments]
                assert len(spoken) >= 2 and all(a != b for a, b in zip(spoken, spoken[1:]))
                for s in e.segments:
                    assert 4 <= len(s.text.split()) <= 8 or s is e.segments[-1]
                    assert s.audio is None or s.audio.endswith("-target.wav")  # MIX targets: output voice
            else:
                assert kind == "sentence" and e.answer_audio is None and e.segments is None
    train_voices = {e.speaker for e in manifests["train"]}
    assert not train_voices & set(cfg.heldout_voices)
    raw = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert all(not Path(r["audio"]).is_absolute() for r in raw)  # the folder can be moved


def test_config_mismatch_overwrite_and_validation(built, tmp_path):
    out, _ = built
    with pytest.raises(CorpusError, match=r"different config \(seed: 0 -> 5\).*overwrite=True"):
        build_corpus(small_config(seed=5), out, progress=False, stop_after=0)
    d = tmp_path / "o"
    build_corpus(small_config(), d, progress=False, stop_after=2)
    report = build_corpus(small_config(n_qa=0, n_interleaved=0), d, progress=False, overwrite=True)
    assert report.complete and report.reused == 0 and sum(report.counts["train"].values()) == 3
    with pytest.raises(ConfigError, match="both training and held-out"):
        small_config(heldout_voices=["en-us+m1"])
    with pytest.raises(ConfigError, match="unknown key"):
        CorpusConfig.from_dict({"seeds": 3})
    with pytest.raises(UnknownVoiceError, match="variant 'q9'"):
        build_corpus(small_config(voices=["en-us+q9"]), tmp_path / "v", progress=False)
    default = CorpusConfig()
    assert set(HELDOUT_VOICES).isdisjoint(default.voices) and default.answer_voice not in default.voices
    assert not {VoiceSpec.parse(v).variant for v in default.voices} & set(HELDOUT_VARIANTS)


def test_entries_longer_than_the_training_limit_are_left_out(built, tmp_path, monkeypatch):
    """The limit is training's (MAX_SECONDS); lowered here so that this small corpus has entries beyond it."""
    import flow_omni.data.corpus as corpus_module

    out, _ = built
    copy = tmp_path / "c"
    shutil.copytree(out, copy)
    every = [e for s in SPLITS for e in read_manifest(copy / f"{s}.jsonl")]

    def longest(e):
        return max(d for d in (e.duration, e.answer_duration, e.target_duration) if d is not None)

    lengths = sorted({longest(e) for e in every})
    limit = (lengths[-3] + lengths[-4]) / 2  # between two lengths: the entries of the three longest are over it
    over = sorted(e.id for e in every if longest(e) > limit)
    assert len(over) >= 3
    monkeypatch.setattr(corpus_module, "MAX_SECONDS", limit)
    report = build_corpus(small_config(), copy, progress=False)
    assert report.complete and report.reused == report.n_utterances  # the same WAVs: only the manifests change
    assert sorted(report.too_long) == over
    kept = [e for s in SPLITS for e in read_manifest(copy / f"{s}.jsonl")]
    assert sorted(e.id for e in kept) == sorted(set(e.id for e in every) - set(over))
    assert sum(sum(k.values()) for k in report.counts.values()) == len(kept)
    assert f"left out {len(over)} entries longer than training's {limit:g} s limit" in str(report)
    for s in SPLITS:  # what training reads with that limit: nothing it would skip
        assert validate_manifest(copy / f"{s}.jsonl", max_duration=limit).problems == []


# ---- one output voice ------------------------------------------------------------------------


def pcm(es: Espeak, text: str, voice: str, rate: int, pitch: int, intonation: int) -> np.ndarray:
    """What the corpus writes for this utterance (same synthesis and quantisation as build_corpus)."""
    audio = es.synthesize(text, voice, rate_wpm=rate, pitch=pitch, pitch_range=intonation).numpy()
    return np.clip(np.round(audio.astype(np.float64) * 32767.0), -32768, 32767).astype(np.int16)


def wav_pcm(path) -> np.ndarray:
    return sf.read(str(path), dtype="int16")[0]


def test_speech_targets_are_in_one_voice_and_inputs_keep_theirs(built, es):
    out, _ = built
    cfg = small_config()
    answer = (cfg.answer_voice, cfg.answer_rate, cfg.answer_pitch, cfg.answer_intonation)
    entries = [e for s in SPLITS for e in read_manifest(out / f"{s}.jsonl")]
    sentences = [e for e in entries if e.meta["kind"] == "sentence"]
    assert len({e.text for e in sentences}) == len(sentences) == 6
    # The T2A target of every sentence (and question, and document) is its text spoken by the
    # answer voice at the answer rate and pitch: the audio itself, not only the label, is checked.
    for e in entries:
        assert np.array_equal(wav_pcm(e.target_audio), pcm(es, e.text, *answer)), e.id
        assert e.t2a_audio == e.target_audio
    # ... while the input side (A2T, A2A questions) keeps its many voices, rates and pitches.
    for e in entries:
        assert np.array_equal(
            wav_pcm(e.audio), pcm(es, e.text, e.speaker, e.meta["rate"], e.meta["pitch"], e.meta["intonation"])
        ), e.id
    assert len({e.speaker for e in sentences}) >= 3 and cfg.answer_voice not in {e.speaker for e in entries}
    # Spoken spans of interleaved documents (MIX targets) are in the answer voice too.
    spans = [s for e in entries if e.segments for s in e.segments if s.audio]
    assert spans and all(np.array_equal(wav_pcm(s.audio), pcm(es, s.text, *answer)) for s in spans)


def test_equal_texts_share_one_target_wav(monkeypatch):
    cfg = CorpusConfig(seed=3, n_sentences=2, n_qa=60, n_interleaved=0)
    plan = make_plan(cfg)
    assert make_plan(cfg) == plan
    qa = [e for e in plan.entries if e.kind == "qa"]
    by_text: dict[str, set[str]] = {}
    for e in qa:
        by_text.setdefault(e.main.text, set()).add(e.target.path)
    assert len(by_text) < len(qa)  # some questions repeat (the facts) ...
    assert all(len(paths) == 1 for paths in by_text.values())  # ... and share their target WAV
    assert len({u.path for u in plan.utterances}) == len(plan.utterances)
    # A text that is also an answer is not spoken twice in the answer voice: it uses the answer's WAV.
    answer = qa[0].answer
    monkeypatch.setattr("flow_omni.data.corpus.generate_sentences", lambda n, rng: [answer.text, "a new one."])
    plan = make_plan(cfg)
    assert plan.entries[0].target == answer and plan.entries[1].target.uid == "sent-000001-target"
    assert len({u.path for u in plan.utterances}) == len(plan.utterances)


def test_one_output_voice_moves_nothing_else_and_can_be_turned_off(built, tmp_path):
    out, _ = built
    on, off = make_plan(small_config()), make_plan(small_config(one_output_voice=False))
    assert [(e.id, e.split, e.main, e.answer) for e in on.entries] == [
        (e.id, e.split, e.main, e.answer) for e in off.entries
    ]
    assert all(e.target is None for e in off.entries)
    for a, b in zip(on.entries, off.entries):
        if a.segments is not None:
            assert [t for t, _ in a.segments] == [t for t, _ in b.segments]
            assert all(u is None or u.voice == b.main.voice for _, u in b.segments)  # the document's voice
            assert all(u is None or u.voice == "en-us+m3" for _, u in a.segments)
    report = build_corpus(small_config(one_output_voice=False), tmp_path / "off", progress=False)
    assert report.n_utterances == len(off.utterances)
    many = tree(tmp_path / "off")
    assert not [k for k in many if k.endswith("-target.wav")]
    entries = [e for s in SPLITS for e in read_manifest(tmp_path / "off" / f"{s}.jsonl")]
    assert all(e.target_audio is None and "target_speaker" not in e.meta for e in entries)
    assert all(e.t2a_audio == e.audio for e in entries)  # T2A falls back to the many-voice audio
    # The audio both corpora have is the same bytes (voices, rates and splits of the seed do not move).
    one = tree(out)
    shared = [k for k in many if k.startswith("wavs/") and k.endswith(".wav") and k in one]
    assert len(shared) == len([u for u in off.utterances if not re.search(r"-s\d\d$", u.uid)])
    assert all(one[k] == many[k] for k in shared)
    with pytest.raises(CorpusError, match="one_output_voice: False -> True"):
        build_corpus(small_config(), tmp_path / "off", progress=False, stop_after=0)


def test_word_onsets_follow_the_words(es):
    text = "anna ran calmly past 42 red doors."
    audio, words = es.synthesize_aligned(text, "en-us+m3")
    assert torch.equal(audio, es.synthesize(text, "en-us+m3"))
    starts = [m.start() for m in re.finditer(r"\S+", text)]
    chars = [c for c, _ in words]
    # one onset per word, and two for "42" (read "forty two"), at its first and second digit
    assert chars == starts[:4] + [starts[4], starts[4] + 1] + starts[5:]
    times = [t for _, t in words]
    assert times[0] == pytest.approx(DEFAULT_MARGIN_SECONDS, abs=0.02)
    assert all(b - a > 0.05 for a, b in zip(times, times[1:])) and times[-1] < audio.shape[0] / SR - 0.1


def test_a_folder_built_before_word_timings_resumes_with_them(built, tmp_path):
    out, full = built
    d = tmp_path / "old"
    shutil.copytree(out, d)
    (d / WAV_DIR / WORDS_NAME).unlink()
    for split in SPLITS:
        (d / f"{split}.jsonl").unlink()
    report = build_corpus(small_config(), d, progress=False)
    assert report.complete and report.synthesized == 0 and report.reused == full.n_utterances
    assert tree(d) == tree(out)  # the WAVs spoken again gave the same timings (and audio)
    # a log line torn by a killed build: its WAV is spoken again, and the lines after it stand alone
    log = d / WAV_DIR / WORDS_NAME
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:3]) + lines[3][:20])
    build_corpus(small_config(), d, progress=False)
    assert len(read_words(log)) == full.n_utterances and tree(d)["train.jsonl"] == tree(out)["train.jsonl"]


def test_a_many_voice_folder_of_an_older_version_resumes_into_one_voice(built, tmp_path):
    out, full = built
    d = tmp_path / "old"
    build_corpus(small_config(one_output_voice=False), d, progress=False)
    stored = json.loads((d / "corpus.json").read_text())
    del stored["one_output_voice"]  # what an older version wrote
    (d / "corpus.json").write_text(json.dumps(stored))
    report = build_corpus(small_config(), d, progress=False)
    plan = make_plan(small_config())
    old_names = {u.path for u in make_plan(small_config(one_output_voice=False)).utterances}
    assert report.complete and report.reused == len([u for u in plan.utterances if u.path in old_names])
    assert report.synthesized == full.n_utterances - report.reused > 0
    now, straight = tree(d), tree(out)
    # Every file of the straight build is there, byte for byte (the word-timing log in another order);
    # the old span WAVs are left over, unused.
    words = WAV_DIR + "/" + WORDS_NAME
    assert set(straight[words].splitlines()) <= set(now[words].splitlines())
    assert all(now[k] == v for k, v in straight.items() if k not in ("corpus.json", words))
    assert all(re.fullmatch(r"wavs/doc-\d{6}-s\d\d\.wav", k) for k in set(now) - set(straight))


def test_validate_catches_a_missing_target_file(built, tmp_path):
    out, _ = built
    d = tmp_path / "copy"
    shutil.copytree(out, d)
    assert validate_manifest(d / "train.jsonl").ok
    victim = next(e for e in read_manifest(d / "train.jsonl", resolve=False) if e.meta["kind"] == "sentence")
    (d / victim.target_audio).unlink()
    rep = validate_manifest(d / "train.jsonl")
    assert [(p.id, p.kind) for p in rep.problems] == [(victim.id, "missing_file")]
    assert rep.problems[0].message.startswith(f"missing target_audio file {victim.target_audio} (looked for ")
    assert victim.id not in {e.id for e in rep.entries}
    (d / victim.target_audio).write_bytes(b"RIFF not really")
    assert [p.kind for p in validate_manifest(d / "train.jsonl").problems] == ["unreadable_audio"]
