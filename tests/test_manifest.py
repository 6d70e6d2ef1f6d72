"""Corpus importers and manifest validation on tiny synthetic corpora built in tmp_path."""

import json
import logging
import shutil

import numpy as np
import pytest
import soundfile as sf

from flow_omni.data.importers import CorpusError, CorpusNotFoundError, detect_style, import_librispeech, import_wav_txt
from flow_omni.data.manifest import ManifestEntry, ManifestError, read_manifest, write_manifest
from flow_omni.data.validate import ManifestNotFoundError, Problem, validate_manifest
from flow_omni.errors import ConfigError, FlowOmniError

SR = 16000


def write_tone(path, seconds=0.25, sr=SR, seed=0, fmt=None):
    """A short sine plus a little noise; returns the exact duration in seconds."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * (150 + 40 * seed) * t) + 0.01 * rng.standard_normal(n)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.astype(np.float32), sr, format=fmt)
    return n / sr


def make_librispeech(root):
    """Two speakers, three chapters; utterance lengths differ so durations are distinguishable."""
    expected = {}
    layout = {
        ("19", "198"): ["the cat sat", "on the mat"],
        ("19", "227"): ["hello world"],
        ("26", "495"): ["good  morning\tall"],  # runs of whitespace collapse
    }
    k = 0
    for (spk, chap), texts in layout.items():
        folder = root / spk / chap
        lines = []
        for i, text in enumerate(texts):
            utt = f"{spk}-{chap}-{i:04d}"
            k += 1
            dur = write_tone(folder / f"{utt}.flac", seconds=0.1 * k, seed=k)
            lines.append(f"{utt} {text.upper()}")
            expected[utt] = (" ".join(text.upper().split()), spk, dur, chap)
        (folder / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    return expected


# --------------------------------------------------------------------------------------------
# importers


def test_import_librispeech_entries(tmp_path):
    expected = make_librispeech(tmp_path / "LibriSpeech" / "dev-clean")
    res = import_librispeech(tmp_path / "LibriSpeech", progress=False)  # a parent of the split works too
    assert res.style == "librispeech" and res.problems == [] and res.manifest is None
    assert [e.id for e in res.entries] == sorted(expected)
    for e in res.entries:
        text, spk, dur, chap = expected[e.id]
        assert (e.text, e.speaker, e.meta) == (text, spk, {"chapter": chap})
        assert e.duration == pytest.approx(dur, abs=1e-4)
        assert e.audio.endswith(f"{e.id}.flac") and e.audio.startswith(str(tmp_path.resolve()))
    assert "4 entries" in res.summary() and "no problems" in res.summary()


def test_import_writes_relative_manifest_that_moves_with_the_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    make_librispeech(corpus)
    res = import_librispeech(corpus, out=corpus / "train.jsonl", progress=False)
    assert res.manifest == (corpus / "train.jsonl").resolve()
    rows = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    assert [r["audio"] for r in rows] == [f"{e.speaker}/{e.meta['chapter']}/{e.id}.flac" for e in res.entries]
    assert read_manifest(corpus / "train.jsonl") == res.entries  # round trip, paths resolved again

    shutil.move(str(corpus), str(tmp_path / "moved"))
    moved = read_manifest(tmp_path / "moved" / "train.jsonl")
    assert [e.id for e in moved] == [e.id for e in res.entries]
    assert validate_manifest(tmp_path / "moved" / "train.jsonl").ok

    # A manifest outside the corpus folder stores absolute paths.
    res2 = import_librispeech(tmp_path / "moved", out=tmp_path / "elsewhere" / "m.jsonl", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "elsewhere" / "m.jsonl").read_text().splitlines()]
    assert all(r["audio"] == e.audio and r["audio"].startswith("/") for r, e in zip(rows, res2.entries))


def test_import_librispeech_reports_every_problem(tmp_path, caplog):
    make_librispeech(tmp_path)
    chap = tmp_path / "19" / "198"
    write_tone(chap / "19-198-0009.flac")  # audio with no transcript line
    with open(chap / "19-198.trans.txt", "a") as fh:
        fh.write("19-198-0005 A LINE WITH NO AUDIO\n19-198-0000\n")  # and 0000 again, with no text
    (chap / "19-198-0001.flac").write_bytes(b"not a flac file at all" * 10)
    write_tone(tmp_path / "30" / "300" / "30-300-0000.flac")  # a chapter with no transcript file
    with caplog.at_level(logging.WARNING, logger="flow_omni.data"):
        res = import_librispeech(tmp_path, progress=False)
    kinds = sorted((p.kind, p.path.name) for p in res.problems)
    assert kinds == [
        ("empty_text", "19-198.trans.txt"),
        ("missing_audio", "19-198-0005.flac"),
        ("missing_transcript", "19-198-0009.flac"),
        ("missing_transcript", "30-300-0000.flac"),
        ("unreadable_audio", "19-198-0001.flac"),
    ]
    assert [e.id for e in res.entries] == ["19-198-0000", "19-227-0000", "26-495-0000"]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == len(res.problems)
    assert "19-198-0005" in "\n".join(res.lines())


def test_import_libritts(tmp_path):
    root = tmp_path / "LibriTTS" / "train-clean-100"
    folder = root / "84" / "121123"
    d0 = write_tone(folder / "84_121123_000007_000001.wav", 0.2, seed=1)
    (folder / "84_121123_000007_000001.normalized.txt").write_text("Normalized text, one.\n")
    (folder / "84_121123_000007_000001.original.txt").write_text("Original text 1.")
    d1 = write_tone(folder / "84_121123_000008_000000.wav", 0.3, seed=2)
    (folder / "84_121123_000008_000000.original.txt").write_text("Only the original, Mr. Smith.")
    write_tone(folder / "84_121123_000009_000000.wav", 0.1)  # no transcript at all
    (folder / "84_121123_000010_000000.normalized.txt").write_text("no audio for me")
    assert detect_style(root) == "libritts"
    res = import_librispeech(root, progress=False)
    assert res.style == "libritts"
    assert [(e.id, e.text, e.speaker) for e in res.entries] == [
        ("84_121123_000007_000001", "Normalized text, one.", "84"),
        ("84_121123_000008_000000", "Only the original, Mr. Smith.", "84"),
    ]
    assert [e.duration for e in res.entries] == pytest.approx([d0, d1], abs=1e-4)
    assert res.entries[1].meta == {"chapter": "121123", "text_source": "original"}
    assert sorted(p.kind for p in res.problems) == ["missing_audio", "missing_transcript"]
    with pytest.raises(CorpusError, match=r"no librispeech transcripts \(\*.trans.txt\)"):
        import_librispeech(root, style="librispeech", progress=False)


def test_import_wav_txt(tmp_path):
    d_a = write_tone(tmp_path / "a.wav", 0.2)
    (tmp_path / "a.txt").write_text("first\nline  two\n")
    d_b = write_tone(tmp_path / "spk1" / "b.flac", 0.3)
    (tmp_path / "spk1" / "b.txt").write_text("second")
    write_tone(tmp_path / "spk1" / "c.ogg", 0.2, fmt="OGG")
    (tmp_path / "spk1" / "c.txt").write_text("third")
    write_tone(tmp_path / "orphan.wav", 0.1)  # no transcript: reported, not dropped silently
    (tmp_path / "README.txt").write_text("notes")  # a transcript with no audio: reported too
    (tmp_path / "blank.txt").write_text("  \n")
    write_tone(tmp_path / "blank.wav", 0.1)
    write_tone(tmp_path / "a.flac", 0.1)  # same stem as a.wav, hence the same id: reported, a.wav kept

    res = import_wav_txt(tmp_path, out=tmp_path / "all.jsonl", speaker_from_folder=True, progress=False)
    assert [(e.id, e.text, e.speaker) for e in res.entries] == [
        ("a", "first line two", None),
        ("spk1/b", "second", "spk1"),
        ("spk1/c", "third", "spk1"),
    ]
    assert [e.duration for e in res.entries[:2]] == pytest.approx([d_a, d_b], abs=1e-4)
    assert sorted((p.kind, p.path.name) for p in res.problems) == [
        ("duplicate_id", "a.flac"),
        ("empty_text", "blank.txt"),
        ("missing_audio", "README.txt"),
        ("missing_transcript", "orphan.wav"),
    ]
    assert [json.loads(x)["audio"] for x in (tmp_path / "all.jsonl").read_text().splitlines()] == [
        "a.wav",
        "spk1/b.flac",
        "spk1/c.ogg",
    ]
    assert validate_manifest(tmp_path / "all.jsonl").ok

    flat = import_wav_txt(tmp_path, recursive=False, progress=False)
    assert [e.id for e in flat.entries] == ["a"]


def test_import_errors_are_clear(tmp_path):
    with pytest.raises(CorpusNotFoundError, match="does not exist") as info:
        import_librispeech(tmp_path / "nope", progress=False)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, FlowOmniError)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.md").write_text("hi")
    with pytest.raises(CorpusError, match="LibriSpeech.*LibriTTS.*import_wav_txt"):
        import_librispeech(tmp_path / "junk", progress=False)
    with pytest.raises(CorpusError, match="no audio files"):
        import_wav_txt(tmp_path / "junk", progress=False)
    with pytest.raises(CorpusError, match="style must be one of"):
        import_librispeech(tmp_path / "junk", style="vctk")
    write_tone(tmp_path / "bad" / "x.wav")
    with pytest.raises(CorpusError, match="no usable utterance.*missing_transcript|no x.txt"):
        import_wav_txt(tmp_path / "bad", progress=False)


# --------------------------------------------------------------------------------------------
# validation


@pytest.fixture
def corpus(tmp_path):
    """A manifest folder with good audio, a random-bytes .wav and a truncated .wav."""
    wavs = tmp_path / "wavs"
    for i in range(4):
        write_tone(wavs / f"s{i:04d}.wav", 0.3, seed=i)
    (wavs / "garbage.wav").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    data = (wavs / "s0000.wav").read_bytes()
    (wavs / "truncated.wav").write_bytes(data[: len(data) // 2])
    return tmp_path


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_validation_reports_one_clear_line_per_problem(corpus, caplog):
    m = write_lines(
        corpus / "train.jsonl",
        [
            {"id": "s0000", "audio": "wavs/s0000.wav", "text": "good one", "duration": 0.3},
            {"id": "s0007", "audio": "wavs/s0007.wav", "text": "missing file"},
            {"id": "s0001", "audio": "wavs/s0001.wav", "text": "  \t"},
            {"id": "g", "audio": "wavs/garbage.wav", "text": "random bytes"},
            "",  # blank lines are not problems
            {"id": "t", "audio": "wavs/truncated.wav", "text": "cut in half"},
            {"id": "s0002", "audio": str(corpus / "wavs" / "s0002.wav"), "text": "absolute path is fine"},
        ],
    )
    with caplog.at_level(logging.WARNING, logger="flow_omni.data"):
        rep = validate_manifest(m)
    assert [(p.line, p.id, p.kind) for p in rep.problems] == [
        (2, "s0007", "missing_file"),
        (3, "s0001", "empty_text"),
        (4, "g", "unreadable_audio"),
        (6, "t", "truncated_audio"),
    ]
    lines = rep.lines()
    looked = corpus.resolve() / "wavs" / "s0007.wav"
    assert lines[0] == f"{m}:2 (id s0007): missing audio file wavs/s0007.wav (looked for {looked})"
    assert lines[1] == f"{m}:3 (id s0001): transcript 'text' is empty"
    assert lines[2].startswith(f"{m}:4 (id g): cannot open wavs/garbage.wav as audio (")
    assert lines[3].startswith(f"{m}:6 (id t): wavs/truncated.wav is truncated: its header declares 9600 bytes")
    assert [r.getMessage() for r in caplog.records] == lines  # skipping is never silent
    assert [e.id for e in rep.entries] == ["s0000", "s0002"]
    assert rep.entries[0].audio == str(corpus.resolve() / "wavs" / "s0000.wav")
    assert rep.n_lines == 6 and not rep.ok
    assert rep.entries[1].duration == 0.3  # filled in from the header
    assert rep.summary() == (
        f"{m}: 2 of 6 lines usable (0.00 h of audio); 4 problem(s) on 4 line(s): "
        "1 empty_text, 1 missing_file, 1 truncated_audio, 1 unreadable_audio"
    )

    with pytest.raises(ManifestError, match=r"train.jsonl:2 \(id s0007\): missing audio file wavs/s0007.wav"):
        validate_manifest(m, on_error="stop")


def test_validation_schema_problems(corpus):
    m = write_lines(
        corpus / "m.jsonl",
        [
            {"id": "s0000", "audio": "wavs/s0000.wav", "text": "a"},
            '{"id": "s0001", "audio": "wavs/s0001.wav", "text": "b"',  # cut-off JSON
            {"id": "s0001", "audio": "wavs/s0001.wav", "text": "b", "transcript": "x"},
            {"id": "s0002", "audio": "wavs/s0002.wav"},
            {"id": "s0000", "audio": "wavs/s0003.wav", "text": "same id again"},
            [1, 2],
            {"id": "s0003", "audio": "wavs/s0003.wav", "text": "d", "duration": "0.3"},
            {"id": "s0003b", "audio": "wavs/s0003.wav", "text": "ok"},
        ],
    )
    rep = validate_manifest(m, check_audio=False)
    assert [(p.line, p.id, p.kind) for p in rep.problems] == [
        (2, None, "bad_json"),
        (3, "s0001", "unknown_key"),
        (4, "s0002", "missing_key"),
        (5, "s0000", "duplicate_id"),
        (6, None, "bad_schema"),
        (7, "s0003", "bad_schema"),
    ]
    text = "\n".join(rep.lines())
    assert f"{m}:2: not valid JSON" in text
    assert f"{m}:3 (id s0001): unknown key(s) ['transcript']" in text
    assert f"{m}:5 (id s0000): duplicate id 's0000': already used on line 1" in text
    assert "'duration' must be a non-negative number of seconds, got '0.3'" in text
    assert [e.id for e in rep.entries] == ["s0000", "s0003b"]
    with pytest.raises(ManifestError, match=r"m.jsonl:2: not valid JSON"):
        validate_manifest(m, on_error="stop", check_audio=False)


def test_validation_durations_rates_answers_and_segments(corpus):
    write_tone(corpus / "wavs" / "long.wav", 1.0)
    write_tone(corpus / "wavs" / "r24.wav", 0.3, sr=24000)
    m = write_lines(
        corpus / "m.jsonl",
        [
            {"id": "a", "audio": "wavs/s0000.wav", "text": "x", "duration": 0.35},  # within 0.1 s
            {"id": "b", "audio": "wavs/s0001.wav", "text": "x", "duration": 0.5},
            {"id": "c", "audio": "wavs/long.wav", "text": "x"},
            {"id": "d", "audio": "wavs/r24.wav", "text": "x"},
            {"id": "e", "audio": "wavs/s0002.wav", "text": "q", "answer_audio": "wavs/s0003.wav", "answer_text": " "},
            {"id": "f", "audio": "wavs/s0002.wav", "text": "q", "answer_audio": "wavs/nope.wav", "answer_text": "a"},
            {
                "id": "g",
                "audio": "wavs/s0002.wav",
                "text": "doc",
                "segments": [{"text": "spoken", "audio": "wavs/gone.wav"}, {"text": ""}],
            },
            {"id": "h", "audio": "wavs/s0002.wav", "text": "q", "answer_audio": "wavs/garbage.wav", "answer_text": "a"},
        ],
    )
    rep = validate_manifest(m, sample_rate=SR, max_duration=0.8, min_duration=0.1)
    assert [(p.line, p.kind) for p in rep.problems] == [
        (2, "duration_mismatch"),
        (3, "too_long"),
        (4, "wrong_sample_rate"),
        (5, "empty_text"),
        (6, "missing_file"),
        (7, "empty_text"),
        (7, "missing_file"),
        (8, "unreadable_audio"),
    ]
    msgs = [p.message for p in rep.problems]
    assert msgs[0] == "duration says 0.50 s but wavs/s0001.wav is 0.30 s long (tolerance 0.1 s)"
    assert msgs[1] == "audio wavs/long.wav is 1.00 s long; max_duration is 0.8 s"
    assert msgs[2] == "audio wavs/r24.wav is at 24000 Hz; expected 16000 Hz"
    assert msgs[3] == "answer_audio is set but answer_text is empty"
    assert msgs[4].startswith("missing answer_audio file wavs/nope.wav")
    gone = corpus.resolve() / "wavs" / "gone.wav"
    assert msgs[5] == "segments[1].text is empty"
    assert msgs[6] == f"missing segments[0].audio file wavs/gone.wav (looked for {gone})"
    assert msgs[7].startswith("answer_audio: cannot open wavs/garbage.wav")
    assert [e.id for e in rep.entries] == ["a"]
    short = [p.line for p in validate_manifest(m, min_duration=0.5).problems if p.kind == "too_short"]
    assert short == [1, 2, 4, 5, 5, 6, 7, 8]  # line 5 twice: its audio and its answer_audio
    # Without opening audio, limits fall back to the duration fields.
    assert [p.kind for p in validate_manifest(m, check_audio=False, max_duration=0.4).problems].count("too_long") == 1


def test_validate_command_flags_what_training_would_skip_by_default(tmp_path, capsys, caplog):
    """Without --max-seconds the limit is training's default, so a manifest that validates clean trains
    on every entry; 0 lifts the limit."""
    from flow_omni.cli import main
    from flow_omni.data.dataset import MAX_SECONDS, DataConfig

    assert DataConfig().max_seconds == MAX_SECONDS
    write_tone(tmp_path / "long.wav", MAX_SECONDS + 0.1)
    write_tone(tmp_path / "ok.wav", 0.5)
    rows = [{"id": "long", "audio": "long.wav", "text": "x"}, {"id": "ok", "audio": "ok.wav", "text": "y"}]
    m = write_lines(tmp_path / "m.jsonl", rows)
    with pytest.raises(SystemExit) as exit_info:
        main(["manifest", "validate", "--quiet", str(m)])
    assert exit_info.value.code == 1
    summary = capsys.readouterr().out
    assert "1 of 2 lines usable" in summary and "1 too_long" in summary
    seconds = MAX_SECONDS + 0.1
    assert f"(id long): audio long.wav is {seconds:.2f} s long; max_duration is {MAX_SECONDS:g} s" in caplog.text
    assert main(["manifest", "validate", "--quiet", "--max-seconds", "0", str(m)]) == 0
    assert main(["manifest", "validate", "--quiet", "--max-seconds", str(MAX_SECONDS + 1), str(m)]) == 0
    assert main(["manifest", "validate", "--quiet", "--max-seconds", "-1", str(m)]) == 2
    assert "--max-seconds (0: no limit) must be finite, >= 0, got -1.0" in capsys.readouterr().err


def test_validation_detects_truncated_flac_and_full_decode(corpus):
    write_tone(corpus / "wavs" / "x.flac", 0.5)
    data = (corpus / "wavs" / "x.flac").read_bytes()
    (corpus / "wavs" / "cut.flac").write_bytes(data[: len(data) // 2])  # the header still says 0.5 s
    bad = np.zeros(SR // 4, np.float32)
    bad[SR // 8] = np.nan  # in the middle: beyond the frames the cheap check decodes at each end
    sf.write(str(corpus / "wavs" / "nan.wav"), bad, SR, subtype="FLOAT")
    m = write_lines(
        corpus / "m.jsonl",
        [
            {"id": "x", "audio": "wavs/x.flac", "text": "whole"},
            {"id": "cut", "audio": "wavs/cut.flac", "text": "half"},
            {"id": "nan", "audio": "wavs/nan.wav", "text": "nan"},
        ],
    )
    cheap = validate_manifest(m)
    assert [(p.id, p.kind) for p in cheap.problems] == [("cut", "unreadable_audio")]
    assert cheap.problems[0].message.startswith("cannot decode wavs/cut.flac (")
    assert cheap.problems[0].message.endswith("the file is probably truncated or corrupt")
    full = validate_manifest(m, check_audio="full")
    assert [(p.id, p.kind) for p in full.problems] == [("cut", "unreadable_audio"), ("nan", "non_finite_audio")]
    assert validate_manifest(m, check_audio=False).ok  # existence only


def test_validation_argument_errors(tmp_path):
    with pytest.raises(ManifestNotFoundError, match="does not exist") as info:
        validate_manifest(tmp_path / "missing.jsonl")
    assert isinstance(info.value, FileNotFoundError)
    m = write_lines(tmp_path / "m.jsonl", [])
    with pytest.raises(ConfigError, match="on_error"):
        validate_manifest(m, on_error="ignore")
    with pytest.raises(ConfigError, match="min_duration"):
        validate_manifest(m, min_duration=5, max_duration=1)
    assert Problem(3, None, "bad_json", "oops").format("x.jsonl") == "x.jsonl:3: oops"


def test_write_then_validate_round_trip_keeps_optional_fields(corpus):
    entry = ManifestEntry(
        id="q1",
        audio="wavs/s0000.wav",
        text="what is two plus two",
        speaker="en+f3",
        duration=0.3,
        answer_audio="wavs/s0001.wav",
        answer_text="four",
        answer_duration=0.3,
        meta={"src": "t"},
    )
    m = write_manifest(corpus / "qa.jsonl", [entry])
    rep = validate_manifest(m)
    assert rep.ok and rep.entries == [entry.resolve(corpus.resolve())]


def test_validation_checks_the_target_audio(corpus):
    write_tone(corpus / "wavs" / "long.wav", 1.0)
    m = write_lines(
        corpus / "m.jsonl",
        [
            {"id": "a", "audio": "wavs/s0000.wav", "text": "x", "target_audio": "wavs/s0001.wav"},
            {
                "id": "b",
                "audio": "wavs/s0000.wav",
                "text": "x",
                "target_audio": "wavs/gone.wav",
                "target_duration": 0.3,
            },
            {
                "id": "c",
                "audio": "wavs/s0000.wav",
                "text": "x",
                "target_audio": "wavs/s0001.wav",
                "target_duration": 0.9,
            },
            {"id": "d", "audio": "wavs/s0000.wav", "text": "x", "target_audio": "wavs/garbage.wav"},
            {"id": "e", "audio": "wavs/s0000.wav", "text": "x", "target_audio": "wavs/long.wav"},
            {
                "id": "f",
                "audio": "wavs/s0000.wav",
                "text": "x",
                "target_audio": "wavs/s0001.wav",
                "target_duration": -1,
            },
        ],
    )
    rep = validate_manifest(m, max_duration=0.8)
    assert [(p.id, p.kind) for p in rep.problems] == [
        ("b", "missing_file"),
        ("c", "duration_mismatch"),
        ("d", "unreadable_audio"),
        ("e", "too_long"),
        ("f", "bad_schema"),
    ]
    msgs = [p.message for p in rep.problems]
    assert msgs[0] == f"missing target_audio file wavs/gone.wav (looked for {corpus.resolve() / 'wavs' / 'gone.wav'})"
    assert msgs[1] == "target_duration says 0.90 s but wavs/s0001.wav is 0.30 s long (tolerance 0.1 s)"
    assert msgs[2].startswith("target_audio: cannot open wavs/garbage.wav")
    assert msgs[3] == "target_audio wavs/long.wav is 1.00 s long; max_duration is 0.8 s"
    assert msgs[4] == "'target_duration' must be a non-negative number of seconds, got -1"
    (good,) = rep.entries
    assert good.target_audio == str(corpus.resolve() / "wavs" / "s0001.wav") and good.target_duration == 0.3
    assert good.t2a_audio == good.target_audio and good.t2a_duration == 0.3
    assert [p.id for p in validate_manifest(m, check_audio=False).problems] == ["b", "f"]


def test_target_audio_round_trip_and_old_manifests(corpus):
    entry = ManifestEntry(
        id="s1",
        audio="wavs/s0000.wav",
        text="hello",
        duration=0.3,
        target_audio="wavs/s0001.wav",
        target_duration=0.3,
        meta={"target_speaker": "en-us+m5"},
    )
    m = write_manifest(corpus / "t.jsonl", [entry])
    raw = json.loads(m.read_text())
    assert raw["target_audio"] == "wavs/s0001.wav" and list(raw)[:7] == [
        "id",
        "audio",
        "text",
        "duration",
        "target_audio",
        "target_duration",
        "meta",
    ]
    rep = validate_manifest(m)
    assert rep.ok and rep.entries == [entry.resolve(corpus.resolve())]
    # A manifest without the field (imported, or written before it existed) reads as before:
    # its T2A target is the entry's own audio.
    old = write_lines(corpus / "old.jsonl", [{"id": "s0", "audio": "wavs/s0000.wav", "text": "hello", "duration": 0.3}])
    (e,) = read_manifest(old)
    assert e.target_audio is None and e.t2a_audio == e.audio and e.t2a_duration == 0.3
    assert "target_audio" not in e.to_dict()
    # The whole folder moves with its target files (paths stay relative).
    dest = corpus.parent / f"{corpus.name}-moved"
    shutil.copytree(corpus, dest)
    (moved,) = read_manifest(dest / "t.jsonl")
    assert moved.target_audio == str((dest / "wavs" / "s0001.wav").resolve())


def test_word_onsets_round_trip_and_bad_ones_are_named(corpus):
    line = {"id": "s0", "audio": "wavs/s0000.wav", "text": "hello there", "alignment": [[0, 0.05], [6, 0.4]]}
    (e,) = read_manifest(write_lines(corpus / "w.jsonl", [line]))
    assert e.alignment == [[0, 0.05], [6, 0.4]] and e.t2a_alignment == e.alignment
    for bad, why in (
        ([[0, 0.05], [6, 0.01]], "must increase"),
        ([[0, 0.05], [60, 0.5]], "within the text's 11 characters"),
        ([[0, "x"]], r"\[character index, seconds\] pairs"),
        ([[0, float("nan")]], "finite numbers"),
        ([], "non-empty list"),
    ):
        with pytest.raises(ManifestError, match=why):
            read_manifest(write_lines(corpus / "w.jsonl", [{**line, "alignment": bad}]))
    with pytest.raises(ManifestError, match="'answer_alignment' describes a text the line does not have"):
        read_manifest(write_lines(corpus / "w.jsonl", [{**line, "answer_alignment": [[0, 0.1]]}]))
