"""The flow-omni command on synthetic audio: every job writes what it says it writes."""

import json

import pytest
import soundfile as sf

from flow_omni.audio import load_audio, save_audio
from flow_omni.audio.synth import synth_speech
from flow_omni.cli import build_parser, main


@pytest.fixture
def wav(tmp_path):
    return save_audio(tmp_path / "speech.wav", synth_speech(1.0, seed=3))


def test_every_command_has_help(capsys):
    parser = build_parser()
    for cmd in ("demo", "roundtrip", "mel", "augment", "vocode", "corpus", "train", "train-vocoder", "speak", "answer"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([cmd, "--help"])
        assert exc.value.code == 0
        assert "usage: flow-omni" in capsys.readouterr().out


def test_roundtrip_writes_report_wavs_and_plots(tmp_path):
    cfg = tmp_path / "small.yaml"
    cfg.write_text("num_utterances: 5\ntrain_steps: 30\nbatch_size: 32\nwidth: 64\ndepth: 1\ngriffin_lim_iters: 4\n")
    assert main(["roundtrip", "--out", str(tmp_path / "out"), "--config", str(cfg)]) == 0
    out = tmp_path / "out"
    result = json.loads((out / "roundtrip.json").read_text())
    assert result["config"]["train_steps"] == 30 and result["final_loss"] < result["first_loss"]
    report = (out / "report.md").read_text()
    assert "Griffin-Lim" in report and "mel.png" in report
    for name in ("original.wav", "resynth_original_mel.wav", "flow_head_sample.wav"):
        data, sr = sf.read(out / name)
        assert sr == 24000 and len(data) > 12000
    assert (out / "mel.png").stat().st_size > 10_000 and (out / "loss.png").stat().st_size > 5_000


def test_mel_and_vocode(tmp_path, wav):
    assert main(["mel", str(wav), "-o", str(tmp_path / "m.png"), "--save-tensor", str(tmp_path / "m.safetensors")]) == 0
    assert (tmp_path / "m.png").is_file() and (tmp_path / "m.safetensors").is_file()
    assert main(["vocode", str(wav), "-o", str(tmp_path / "gl.wav")]) == 0
    assert abs(len(load_audio(tmp_path / "gl.wav")) - 24000) <= 256


def test_mel_of_several_files_shares_one_colour_scale(tmp_path, wav, capsys):
    quiet = save_audio(tmp_path / "quiet.wav", 0.01 * synth_speech(0.5, seed=4))
    assert main(["mel", str(wav), str(quiet), "-o", str(tmp_path / "two.png")]) == 0
    out = capsys.readouterr().out
    assert f"{wav}: " in out and f"{quiet}: " in out and (tmp_path / "two.png").stat().st_size > 10_000
    lows, highs = [], []
    for f in (wav, quiet):  # the default scale spans both files, as one file's own scale would not
        assert main(["mel", str(f), "-o", str(tmp_path / "one.png")]) == 0
        low, high = capsys.readouterr().out.split("colour scale ")[1].split(" (")[0].split(" to ")
        lows.append(float(low))
        highs.append(float(high))
    assert f"colour scale {min(lows):.2f} to {max(highs):.2f}" in out and highs[0] != highs[1]
    assert main(["mel", str(wav), "-o", str(tmp_path / "fixed.png"), "--vmin", "-12", "--vmax", "3"]) == 0
    assert "colour scale -12.00 to 3.00" in capsys.readouterr().out
    assert main(["mel", str(wav), "-o", str(tmp_path / "x.png"), "--vmin", "3", "--vmax", "-12"]) == 2
    assert "--vmin 3 is not below --vmax -12" in capsys.readouterr().err
    tensor = str(tmp_path / "m.safetensors")
    assert main(["mel", str(wav), str(quiet), "-o", str(tmp_path / "x.png"), "--save-tensor", tensor]) == 2
    assert "--save-tensor writes the mel of one file; 2 audio files were given" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_vocode_streams_with_a_vocos_checkpoint(tmp_path, wav):
    import torch

    from flow_omni.vocoder import Vocoder, VocoderConfig

    torch.manual_seed(0)
    voc = Vocoder(VocoderConfig(dim=32, intermediate_dim=64, num_layers=2))
    voc.save_pretrained(tmp_path / "voc")
    assert (
        main(
            [
                "vocode",
                str(wav),
                "-o",
                str(tmp_path / "a.wav"),
                "--vocoder",
                str(tmp_path / "voc"),
                "--chunk-frames",
                "7",
            ]
        )
        == 0
    )
    assert main(["vocode", str(wav), "-o", str(tmp_path / "b.wav"), "--vocoder", str(tmp_path / "voc")]) == 0
    a, b = load_audio(tmp_path / "a.wav"), load_audio(tmp_path / "b.wav")
    assert a.shape == b.shape and (a - b).abs().max() < 1e-3  # streamed == offline (16-bit files)


def test_chunk_frames_with_griffin_lim_is_refused_before_any_work(tmp_path, wav, capsys):
    # Griffin-Lim cannot stream; decoding at once under a streaming request would answer another question.
    for name in ("griffinlim", "griffin-lim"):
        argv = ["vocode", str(wav), "-o", str(tmp_path / "v.wav"), "--vocoder", name, "--chunk-frames", "16"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "--chunk-frames 16 streams a Vocos decode, but the vocoder is Griffin-Lim" in err
    assert not (tmp_path / "v.wav").exists()
    assert main(["vocode", str(wav), "-o", str(tmp_path / "v.wav"), "--chunk-frames", "0"]) == 0  # 0: not streamed


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["mel", str(tmp_path / "missing.wav")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    (tmp_path / "bad.yaml").write_text("num_utterance: 3\n")
    assert main(["roundtrip", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "did you mean 'num_utterances'" in capsys.readouterr().err
    assert main(["vocode", str(tmp_path / "missing.wav"), "-o", "x.wav", "--vocoder", "someone/no-such-vocos"]) == 2


def test_a_truncated_wav_is_one_line_exit_2_in_every_command(tmp_path, wav, capsys):
    data = wav.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    for argv in (["mel", str(cut), "-o", str(tmp_path / "m.png")], ["vocode", str(cut), "-o", str(tmp_path / "v.wav")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"{cut} is truncated: its header declares" in err
    assert not (tmp_path / "m.png").exists() and not (tmp_path / "v.wav").exists()


def test_augment_hits_requested_snr(tmp_path, wav, capsys):
    assert (
        main(
            [
                "augment",
                str(wav),
                "-o",
                str(tmp_path / "n.wav"),
                "--noise",
                "pink",
                "--snr",
                "5",
                "--pitch",
                "1",
                "--seed",
                "2",
            ]
        )
        == 0
    )
    assert "pink noise at 5.00 dB SNR" in capsys.readouterr().out
    assert (tmp_path / "n.wav").is_file()


def test_repeated_set_flags_all_apply_in_order():
    parser = build_parser()
    for argv in (["train", "--config", "quickstart"], ["demo"], ["bench", "robustness"]):
        args = parser.parse_args(argv + ["--set", "max_items=2", "seeds=[0]", "--set", "max_items=3"])
        assert args.set == ["max_items=2", "seeds=[0]", "max_items=3"]


def test_importing_the_cli_leaves_the_environment_alone():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    code = "import os, sys, flow_omni.cli; assert 'HF_HUB_OFFLINE' not in os.environ and 'lightning' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_no_speech_error_shows_the_text_short():
    """An untrained model's text can be hundreds of blanks: the error stays one short line."""
    from flow_omni.cli.speak import raise_no_speech
    from flow_omni.errors import FlowOmniError

    with pytest.raises(FlowOmniError) as err:
        raise_no_speech(" " * 600 + "ab" * 100)
    msg = str(err.value)
    assert "800 characters" in msg and "'abab" in msg and "\n" not in msg and len(msg) < 250


@pytest.mark.parametrize("command", ["speak", "answer"])
def test_compile_flag_reaches_the_generation_settings(tmp_path, command):
    from flow_omni.cli.speak import _generation_config

    argv = [command, "hi", "-o", str(tmp_path / "out.wav"), "--model", str(tmp_path)]
    assert _generation_config(build_parser().parse_args([*argv, "--compile"])).compile is True
    assert _generation_config(build_parser().parse_args(argv)).compile is False
