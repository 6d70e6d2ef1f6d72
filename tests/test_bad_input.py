"""Bad input gets one line, not a traceback: every case of issue 13's "one-line errors" list, through the
``flow-omni`` command (exit code 2, no traceback, a message that names the problem) and the Python API,
and no file the user had is changed by a command that fails.

Inputs are made here with numpy/soundfile; the model is the tiny preset, untrained (argument checks
need no skill), saved once for the module.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from flow_omni import FlowOmni, FlowOmniConfig, GenerationConfig, Sample
from flow_omni.audio.io import load_audio, save_audio
from flow_omni.cli import main
from flow_omni.data.manifest import ManifestEntry, ManifestError, read_manifest, write_manifest
from flow_omni.data.validate import validate_manifest
from flow_omni.errors import (
    AudioError,
    CheckpointError,
    ConfigError,
    FlowOmniError,
    OutputPathError,
    UnknownCharactersWarning,
)
from flow_omni.training.config import TrainConfig
from flow_omni.training.vocoder import VocoderTrainConfig, train_vocoder

SR = 24000
AUDIO_EXTENSIONS = ".wav, .flac, .ogg, .mp3"


def tone(seconds: float, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a little noise: audible, deterministic, not silent."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    x = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6)) + 0.01 * rng.standard_normal(t.shape)
    return (0.4 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Path:
    """What a user has in a folder: two WAVs (1 s and 10 ms), a manifest of them, a PNG, a WAV output of
    an earlier command, a text file, and an untrained tiny model."""
    d = tmp_path_factory.mktemp("user")
    sf.write(d / "speech.wav", tone(1.0), SR)
    sf.write(d / "short.wav", tone(0.01), SR)
    write_manifest(d / "train.jsonl", [ManifestEntry("a", "speech.wav", "one two")])
    (d / "earlier.png").write_bytes(b"\x89PNG not really")
    sf.write(d / "earlier.wav", tone(0.5, seed=1), SR)
    (d / "notes.txt").write_text("a file, not a folder\n")
    (d / "results").mkdir()
    torch.manual_seed(0)
    FlowOmni(FlowOmniConfig.preset("tiny")).save_pretrained(d / "model")
    return d


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def fails(capsys, argv: list[str], *fragments: str) -> str:
    """Run ``flow-omni argv``: it must exit 2 with one line on stderr that holds every fragment."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"flow-omni {argv[0]}: error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture
def untouched(user):
    """Fails the test if it changed, added or removed any file of the user's folder."""
    before = snapshot(user)
    yield user
    assert snapshot(user) == before


# ------------------------------------------------------------------------------------------ augment
@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--speed", "0"], ["--speed", "> 0", "got 0.0"]),
        (["--speed", "-1"], ["--speed", "> 0", "got -1.0"]),
        (["--speed", "1000"], ["--speed", "<= 10", "got 1000.0"]),
        (["--speed", "nan"], ["--speed", "finite"]),
        (["--rt60", "-1"], ["--rt60", ">= 0", "got -1.0"]),
        (["--rt60", "inf"], ["--rt60", "finite"]),
        (["--pitch", "100"], ["--pitch", "<= 24", "got 100.0"]),
        (["--pitch", "-30"], ["--pitch", ">= -24"]),
        (["--noise", "white", "--snr", "nan"], ["--snr", "finite", "got nan"]),
        (["--noise", "white", "--snr", "1e308"], ["--snr", "<= 150"]),
        (["--seed", "-1"], ["--seed", ">= 0"]),
        (["--babble-from", "speech.wav"], ["--babble-from", "--noise babble"]),
    ],
)
def test_augment_refuses_every_out_of_range_parameter(untouched, capsys, flags, fragments):
    out = untouched / "earlier.wav"
    fails(capsys, ["augment", str(untouched / "speech.wav"), "-o", str(out), *flags], *fragments)


def test_augment_pitch_on_a_10_ms_file_names_the_file_and_the_length(untouched, capsys):
    short = untouched / "short.wav"
    fails(
        capsys,
        ["augment", str(short), "-o", str(untouched / "earlier.wav"), "--pitch", "2"],
        str(short),
        "240 samples",
        "too short for a pitch shift",
        "2048 samples",
    )


def test_the_readme_augment_example_runs(user, tmp_path, capsys):
    """README: ``flow-omni augment in.wav -o out.wav --noise babble --snr 5 --pitch 2 --rt60 0.4``: babble
    without --babble-from is drawn from synthetic talkers instead of failing."""
    out = tmp_path / "out.wav"
    argv = ["augment", str(user / "speech.wav"), "-o", str(out), "--noise", "babble", "--snr", "5"]
    assert main(argv + ["--pitch", "2", "--rt60", "0.4"]) == 0
    printed = capsys.readouterr().out
    assert "babble noise from synthetic talkers" in printed and "at 5.00 dB SNR" in printed
    assert load_audio(out).shape[0] == SR
    assert main(argv + ["--babble-from", str(user / "speech.wav"), "-o", str(tmp_path / "b.wav")]) == 0
    assert "babble noise from 1 given file(s)" in capsys.readouterr().out


def test_library_perturbations_raise_flow_omni_errors():
    from flow_omni.audio.noise import mix_at_snr
    from flow_omni.audio.perturb import add_reverb, pitch_shift, speed_perturb

    audio = torch.from_numpy(tone(0.5))
    for call in (
        lambda: speed_perturb(audio, 0.0),
        lambda: speed_perturb(audio, 11.0),
        lambda: pitch_shift(audio, 25.0),
        lambda: add_reverb(audio, SR, -1.0),
        lambda: mix_at_snr(audio, audio, float("nan")),
        lambda: mix_at_snr(audio, audio, 4000.0),  # 10^(SNR/10) overflowed here before
    ):
        with pytest.raises(ConfigError):
            call()
    with pytest.raises(AudioError, match="240 samples .* too short for a pitch shift"):
        pitch_shift(audio[:240], 2.0)


# ------------------------------------------------------------------------------------ output paths
def _writers(user: Path, out: str) -> list[list[str]]:
    """Every command that writes one file, with ``out`` as that file."""
    model = ["--model", str(user / "model"), "--max-positions", "3"]
    wav = str(user / "speech.wav")
    return [
        ["augment", wav, "-o", out],
        ["vocode", wav, "-o", out],
        ["speak", "hi", "-o", out, *model],
        ["answer", wav, "-o", out, *model],
    ]


def test_an_output_that_is_a_folder_is_refused_before_the_work(untouched, capsys):
    folder = str(untouched / "results")
    for argv in _writers(untouched, folder):
        fails(capsys, argv, f"-o {folder} is a folder", AUDIO_EXTENSIONS)
    fails(capsys, ["mel", str(untouched / "speech.wav"), "-o", folder], "is a folder", ".png, .pdf, .svg")
    fails(capsys, ["manifest", "import", "wav-txt", str(untouched), "-o", folder], "is a folder")
    fails(capsys, ["manifest", "validate", str(untouched / "train.jsonl"), "--write-clean", folder], "is a folder")


def test_an_unsupported_extension_is_refused_with_the_supported_ones(untouched, capsys):
    bad = str(untouched / "out.xyz")
    for argv in _writers(untouched, bad):
        fails(capsys, argv, "the extension '.xyz'", f"supported: {AUDIO_EXTENSIONS}")
    fails(capsys, _writers(untouched, str(untouched / "out"))[0], "has no extension")
    wav = str(untouched / "speech.wav")
    fails(capsys, ["mel", wav, "-o", str(untouched / "mel.wav")], "the extension '.wav'", "supported: .png")
    fails(
        capsys,
        ["mel", wav, "-o", str(untouched / "m.png"), "--save-tensor", str(untouched / "m.pt")],
        "--save-tensor",
        "supported: .safetensors",
    )


def test_an_unwritable_place_is_refused_before_the_work(untouched, capsys):
    under_a_file = str(untouched / "notes.txt" / "out.wav")
    for argv in _writers(untouched, under_a_file):
        fails(capsys, argv, "cannot be written", "notes.txt is a file, not a folder")
    if Path("/proc/self").is_dir():  # not writable even for root
        for argv in _writers(untouched, "/proc/self/out.wav"):
            fails(capsys, argv, "cannot be written: no permission to write in /proc/self")


def test_a_read_only_folder_is_refused(user, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            # root writes through permission bits; a read-only mount stops root too (containers mount
            # /proc/sys so), and it is the same os.access check that the commands make.
            locked = Path("/proc/sys")
            if not locked.is_dir() or os.access(locked, os.W_OK):
                pytest.skip("no folder here that this user cannot write into")
        fails(capsys, ["augment", str(user / "speech.wav"), "-o", str(locked / "x.wav")], "no permission")
        fails(capsys, ["roundtrip", "--out", str(locked / "run")], "no permission")
        kept = tmp_path / "kept.wav"
        shutil.copy(user / "earlier.wav", kept)
        kept.chmod(0o444)
        if not os.access(kept, os.W_OK):  # root may write a read-only file
            fails(capsys, ["augment", str(user / "speech.wav"), "-o", str(kept)], "is read-only")
    finally:
        (tmp_path / "locked").chmod(0o755)


def test_an_output_folder_that_is_a_file_is_refused(untouched, capsys):
    a_file = str(untouched / "notes.txt")
    fails(capsys, ["roundtrip", "--out", a_file, "--steps", "1"], "is a file; expected a folder")
    fails(capsys, ["corpus", "--out", a_file, "--quiet"], "is a file; expected a folder")
    fails(capsys, ["train", "--config", "quickstart", "--out", a_file], "is a file; expected a folder")
    fails(
        capsys,
        ["train-vocoder", "--manifest", str(untouched / "train.jsonl"), "--out", a_file],
        "is a file; expected a folder",
    )


def test_save_tensor_into_a_new_folder_is_made_and_written(user, tmp_path, capsys):
    """A missing folder on the way is made, as every writer of the library does (not an error after the
    PNG was written, as it was)."""
    tensor = tmp_path / "new" / "deeper" / "mel.safetensors"
    assert main(["mel", str(user / "speech.wav"), "-o", str(tmp_path / "m.png"), "--save-tensor", str(tensor)]) == 0
    assert load_file(tensor)["mel"].shape[0] == 100


@pytest.mark.parametrize("ext, fmt", [(".mp3", "MP3"), (".flac", "FLAC"), (".ogg", "OGG")])
def test_speak_and_augment_write_the_format_the_extension_names(user, tmp_path, capsys, ext, fmt):
    spoken = tmp_path / f"hi{ext}"
    argv = ["speak", "hi", "-o", str(spoken), "--model", str(user / "model"), "--max-positions", "3"]
    assert main(argv) == 0, capsys.readouterr().err
    assert sf.info(str(spoken)).format == fmt
    augmented = tmp_path / f"aug{ext}"
    assert main(["augment", str(user / "speech.wav"), "-o", str(augmented), "--noise", "pink"]) == 0
    assert sf.info(str(augmented)).format == fmt
    assert abs(load_audio(augmented).shape[0] - SR) < 2000  # lossy codecs pad a little


def test_save_audio_refuses_an_unknown_extension(tmp_path):
    with pytest.raises(OutputPathError, match="supported: .wav"):
        save_audio(tmp_path / "x.xyz", torch.from_numpy(tone(0.1)))
    assert not (tmp_path / "x.xyz").exists()


# ------------------------------------------------------------------------------------------- inputs
def test_a_folder_given_as_audio_says_so(untouched, capsys):
    folder = str(untouched / "results")
    fails(capsys, ["mel", folder, "-o", str(untouched / "m.png")], f"{folder} is a folder; expected an audio file")
    fails(
        capsys,
        ["transcribe", folder, "--model", str(untouched / "model")],
        f"{folder} is a folder; expected an audio file",
    )


def test_a_negative_chunk_size_is_refused(untouched, capsys):
    argv = ["vocode", str(untouched / "speech.wav"), "-o", str(untouched / "earlier.wav"), "--chunk-frames", "-1"]
    fails(capsys, argv, "--chunk-frames must be >= 0", "got -1")


def test_a_binary_file_given_as_a_manifest(untouched, tmp_path, capsys):
    wav = str(untouched / "speech.wav")  # a WAV's header holds NUL bytes
    fails(capsys, ["manifest", "validate", wav], "is a binary file, not a manifest")
    fails(capsys, ["train-vocoder", "--manifest", wav, "--out", str(tmp_path / "voc")], "is a binary file")
    assert not (tmp_path / "voc").exists()  # refused before the run folder was made
    with pytest.raises(ManifestError, match="binary file"):
        read_manifest(wav)


def test_a_line_that_is_not_utf8_is_a_problem_of_that_line(user, tmp_path):
    m = tmp_path / "m.jsonl"
    good = json.dumps({"id": "a", "audio": str(user / "speech.wav"), "text": "one"})
    m.write_bytes(good.encode() + b'\n{"id": "\xff\xfe", "audio": "x.wav", "text": "t"}\n' + good.encode() + b"\n")
    rep = validate_manifest(m)
    assert [(p.line, p.kind) for p in rep.problems] == [(2, "bad_encoding"), (3, "duplicate_id")]
    assert rep.problems[0].message == "not UTF-8 text (byte 0xff at column 9)"
    with pytest.raises(ManifestError, match=r"m.jsonl:2: not UTF-8"):
        read_manifest(m)


def test_train_vocoder_as_the_readme_shows_it(user, tmp_path, capsys, monkeypatch):
    """``flow-omni train-vocoder --manifest m.jsonl`` failed on the recipe's own data/val.jsonl."""
    import flow_omni.training.vocoder as vocoder_training

    seen = []

    def record(cfg, **kwargs):
        seen.append(cfg)
        return Path(cfg.out_dir) / "vocoder"

    monkeypatch.setattr(vocoder_training, "train_vocoder", record)
    monkeypatch.chdir(tmp_path)  # where data/val.jsonl does not exist
    manifest = str(user / "train.jsonl")
    assert main(["train-vocoder", "--manifest", manifest]) == 0
    assert "training without validation" in capsys.readouterr().out
    assert seen[-1].train_manifests == [manifest] and seen[-1].val_manifests == []
    assert main(["train-vocoder", "--manifest", manifest, "--val-manifest", manifest]) == 0
    assert seen[-1].val_manifests == [manifest]
    monkeypatch.undo()
    # The real trainer names a missing manifest in one line, before it makes the run folder.
    val = str(tmp_path / "data" / "val.jsonl")
    cfg = VocoderTrainConfig(train_manifests=[manifest], val_manifests=[val], out_dir=str(tmp_path / "v"))
    with pytest.raises(ManifestError, match=f"manifest {val} does not exist"):
        train_vocoder(cfg, progress=False)
    assert not (tmp_path / "v").exists()


# ------------------------------------------------------------------------------------- generation
@pytest.fixture(scope="module")
def model(user) -> FlowOmni:
    return FlowOmni.from_pretrained(user / "model")


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("speech_temperature", math.nan, "speech_temperature must be finite"),
        ("speech_temperature", math.inf, "speech_temperature must be finite"),
        ("text_temperature", math.nan, "text_temperature must be finite"),
        ("cfg_scale", -0.5, "cfg_scale must be finite, >= 0"),
        ("cfg_scale", math.nan, "cfg_scale must be finite"),
        ("top_k", -1, "top_k must be >= 0"),
        ("seed", 2**64, "seed must be within [0, 2**64 - 1]"),
        ("seed", -1, "seed must be within [0, 2**64 - 1]"),
        ("seed", "3", "seed must be an integer"),
        ("solver", "rk45", "solver 'rk45' is unknown"),
        ("kv_cache", "static", "kv_cache 'static' is unknown"),
    ],
)
def test_generation_settings_out_of_range_are_refused(model, field, value, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("*", r"\*")):
        GenerationConfig(**{field: value})
    with pytest.raises(ConfigError):
        model.generate([Sample("T2A", prompt_text="hi")], **{field: value})


def test_the_largest_seed_works(model):
    out = model.generate([Sample("T2T", prompt_text="hi")] * 2, seed=2**64 - 1, max_new_positions=2)
    assert len(out) == 2  # items 0 and 1 take seeds 2**64 - 1 and 0


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--temperature", "nan"], "speech_temperature must be finite"),
        (["--temperature", "inf"], "speech_temperature must be finite"),
        (["--seed", str(2**64)], "seed must be within [0, 2**64 - 1]"),
        (["--flow-steps", "0"], "steps must be >= 1"),
    ],
)
def test_speak_refuses_bad_generation_flags_before_loading(untouched, capsys, flags, fragment):
    argv = ["speak", "hi", "-o", str(untouched / "earlier.wav"), "--model", str(untouched / "nowhere"), *flags]
    fails(capsys, argv, fragment)  # the flag, not the missing model: checked before the model is loaded


def test_a_dict_as_the_generation_config(model):
    a = model.generate([Sample("T2T", prompt_text="hi")], {"max_new_positions": 3, "seed": 1})
    b = model.generate([Sample("T2T", prompt_text="hi")], GenerationConfig(max_new_positions=3, seed=1))
    assert a[0].text_ids == b[0].text_ids and a[0].positions == b[0].positions <= 3
    with pytest.raises(ConfigError, match="did you mean 'max_new_positions'"):
        model.generate([Sample("T2T", prompt_text="hi")], {"max_new_position": 3})
    with pytest.raises(ConfigError, match="a GenerationConfig or a mapping of its fields, got list"):
        model.generate([Sample("T2T", prompt_text="hi")], [3])
    with pytest.raises(ConfigError, match="temperature"):
        next(iter(model.stream(Sample("T2A", prompt_text="hi"), {"speech_temperature": math.nan})))


def test_a_prompt_that_is_not_a_string(model):
    with pytest.raises(FlowOmniError, match="prompt_text must be a string .* got a int"):
        Sample("T2A", prompt_text=5)
    with pytest.raises(FlowOmniError, match="target_text must be a string"):
        Sample("A2T", prompt_audio=torch.zeros(4, 80), target_text=["a"])
    with pytest.raises(FlowOmniError, match="prompt_audio must be a torch.Tensor"):
        Sample("A2T", prompt_audio=np.zeros((4, 80)))
    with pytest.raises(FlowOmniError, match="takes a list of Samples, got a Sample"):
        model.generate(Sample("T2T", prompt_text="hi"))
    with pytest.raises(FlowOmniError, match="takes a list of Samples, got a str"):
        model.generate("hi")
    with pytest.raises(FlowOmniError, match="prompt 1 is a str; expected a Sample"):
        model.generate([Sample("T2T", prompt_text="hi"), "hi"])


# ---------------------------------------------------------------------------------- unknown text
def test_characters_outside_the_tokenizer_are_named(model):
    prompt = Sample("T2T", prompt_text="hi \U0001f600 中\x01")
    with pytest.warns(UnknownCharactersWarning) as caught:
        model.generate([prompt], max_new_positions=1)
    (w,) = [w for w in caught if issubclass(w.category, UnknownCharactersWarning)]
    assert "3 character(s)" in str(w.message)
    for named in ("U+1F600", "U+4E2D", "U+0001"):
        assert named in str(w.message)
    assert model.text_tokenizer.unknown_characters("héllo, world!") == []  # accents are folded, not lost


def test_speak_names_unknown_characters_or_refuses_them_with_strict(untouched, tmp_path, capsys):
    text = "hi \U0001f600"
    out = tmp_path / "x.wav"
    fails(
        capsys,
        ["speak", text, "-o", str(out), "--model", str(untouched / "model"), "--strict"],
        "cannot read",
        "U+1F600",
        "drop --strict",
    )
    assert not out.exists()
    main(["speak", text, "-o", str(out), "--model", str(untouched / "model"), "--max-positions", "3"])
    err = capsys.readouterr().err
    assert "flow-omni speak: warning: 1 character(s) are not in the text tokenizer" in err and "U+1F600" in err
    assert "UnknownCharactersWarning" not in err  # said once, as a line of the command, not as a Python warning


# ------------------------------------------------------------------------------------- checkpoints
def _damaged_copy(user: Path, tmp_path: Path, change) -> Path:
    d = tmp_path / "model"
    shutil.copytree(user / "model", d)
    weights = d / "model.safetensors"
    state = load_file(weights)
    change(state)
    save_file(state, weights, metadata={"flow_omni_class": "FlowOmni"})
    return d


def test_nan_weights_are_named_as_not_finite(user, tmp_path, capsys):
    name = "state_head.weight"

    def poison(state):
        state[name] = state[name].clone()
        state[name][0, 0] = math.nan

    d = _damaged_copy(user, tmp_path, poison)
    with pytest.raises(CheckpointError, match=rf"not finite: 1 tensor\(s\) hold NaN or Inf, e.g. \['{name}'\]"):
        FlowOmni.from_pretrained(d)
    fails(capsys, ["speak", "hi", "-o", str(tmp_path / "x.wav"), "--model", str(d)], "not finite", name)


def test_integer_weights_are_named_as_not_floating_point(user, tmp_path, capsys):
    d = _damaged_copy(user, tmp_path, lambda s: s.update({"state_head.bias": s["state_head.bias"].long()}))
    with pytest.raises(CheckpointError, match="not floating point.*'state_head.bias' hold torch.int64"):
        FlowOmni.from_pretrained(d)
    fails(capsys, ["transcribe", str(user / "speech.wav"), "--model", str(d)], "not floating point")


def test_an_unknown_format_version_is_refused(user, tmp_path, capsys):
    d = tmp_path / "model"
    shutil.copytree(user / "model", d)
    meta = json.loads((d / "config.json").read_text())
    meta["format_version"] = 7
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format_version 7; this flow_omni reads format_version 1"):
        FlowOmni.from_pretrained(d)
    fails(capsys, ["speak", "hi", "-o", str(tmp_path / "x.wav"), "--model", str(d)], "format_version 7")
    del meta["format_version"]
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format_version None"):
        FlowOmni.from_pretrained(d)


def test_resume_with_another_architecture_is_one_line_and_changes_nothing(user, tmp_path, capsys):
    """A 1-step run, then ``--resume`` with a config whose model has another post-net: refused before the
    run's config.yaml, train_log.jsonl or checkpoint are touched."""
    out = tmp_path / "run"
    cfg = {
        "out_dir": str(out),
        "threads": 1,
        "progress": False,
        "loggers": ["csv"],
        "model": {"preset": "tiny"},
        "data": {"train": [str(user / "train.jsonl")], "batch_size": 1},
        "max_steps": 1,
        "checkpoint_every_steps": 1,
        "log_every_steps": 1,
    }
    (tmp_path / "a.yaml").write_text(TrainConfig.from_dict(cfg).to_yaml())
    assert main(["train", "--config", str(tmp_path / "a.yaml")]) == 0
    capsys.readouterr()
    cfg["model"]["overrides"] = {"postnet_layers": 2}
    (tmp_path / "b.yaml").write_text(TrainConfig.from_dict(cfg).to_yaml())
    before = snapshot(out)
    fails(
        capsys,
        ["train", "--config", str(tmp_path / "b.yaml"), "--resume", "--set", "max_steps=2"],
        f"cannot resume from {out / 'checkpoints' / 'last.ckpt'}: its weights do not fit",
        "model.postnet.layers.1.",
        "--overwrite",
    )
    assert snapshot(out) == before


# ---------------------------------------------------------------------------------- pretrained backbone
@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, so that a model cached on this machine cannot make a test pass."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub_cache"))
    return tmp_path / "hub_cache"


@pytest.mark.parametrize(
    "backbone, fragments",
    [
        (
            "HuggingFaceTB/SmolLM2-135M",
            [
                "model.backbone_path 'HuggingFaceTB/SmolLM2-135M' not found locally",
                "HF_HUB_OFFLINE is set",
                "hf download",
            ],
        ),
        ("./nope", ["model.backbone_path './nope' is not a folder", "local model folder or a hub id"]),
        ("{user}/notes.txt", ["notes.txt' is a file, not a folder"]),
        ("{user}/results", ["results' has no config.json", "Hugging Face model folder"]),
    ],
)
def test_a_backbone_that_cannot_be_loaded_offline_is_one_line(
    untouched, tmp_path, empty_hub_cache, monkeypatch, capsys, backbone, fragments
):
    """Refused before the run folder is made, without a transformers traceback."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    backbone = backbone.format(user=untouched)
    argv = ["train", "--config", "stage1", "--set", "model.preset=null", f"model.backbone_path={backbone}"]
    fails(capsys, argv + [f"out_dir={out}"], *fragments)
    assert not out.exists()


def test_an_unreachable_hub_is_named_as_such(empty_hub_cache, monkeypatch):
    from huggingface_hub import constants

    from flow_omni import hub_fetch as hub
    from flow_omni.errors import HubUnavailableError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(HubUnavailableError, match="'someone/llm' not found locally; the hub is unreachable"):
        FlowOmniConfig.from_pretrained_backbone("someone/llm")


def test_a_cached_hub_backbone_is_found_offline(empty_hub_cache, monkeypatch):
    """A hub id downloaded earlier (the cache's layout) passes the check with HF_HUB_OFFLINE set; one whose
    cached copy lacks its weights is refused, naming what is missing."""
    from flow_omni.errors import HubUnavailableError
    from flow_omni.models.backbone import locate_backbone

    commit = "0" * 40
    repo = empty_hub_cache / "models--someone--llm"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match=r"the cached copy has no \*\.safetensors"):
        locate_backbone("someone/llm")
    (repo / "snapshots" / commit / "model.safetensors").write_bytes(b"")
    assert locate_backbone("someone/llm") == "someone/llm"


def test_an_online_hub_id_is_downloaded_with_its_files_only(tmp_path, monkeypatch):
    """With the hub reachable, one snapshot download of the config, safetensors and tokenizer files (no
    duplicate .bin weights); a repo without what is needed is refused, naming it."""
    import huggingface_hub
    from huggingface_hub import constants

    from flow_omni import hub_fetch as hub
    from flow_omni.errors import HubUnavailableError
    from flow_omni.models.backbone import locate_backbone

    calls = []

    def fake_download(repo_id, *, revision=None, allow_patterns=None, local_files_only=False):
        calls.append((repo_id, allow_patterns, local_files_only))
        folder = tmp_path / repo_id.replace("/", "--")
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_text("{}")
        return str(folder)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    with pytest.raises(HubUnavailableError, match=r"'someone/llm' on the Hugging Face hub has no \*\.safetensors"):
        locate_backbone("someone/llm", what="model.backbone_path")
    assert calls == [("someone/llm", ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"], False)]
    (tmp_path / "someone--llm" / "model.safetensors").write_bytes(b"")
    assert locate_backbone("someone/llm") == "someone/llm"
