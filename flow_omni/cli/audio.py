"""``flow-omni`` commands on audio files: ``mel``, ``augment``, ``vocode``.

Each checks its arguments and where it will write before it reads or computes anything
(:mod:`flow_omni.checks`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from flow_omni.audio import LogMel, MelConfig, load_audio, save_audio
from flow_omni.audio.augment import synthetic_babble_pool
from flow_omni.audio.io import AUDIO_OUTPUT_FORMATS, audio_output_format
from flow_omni.audio.noise import MAX_SNR_DB, make_noise, measure_snr_db, mix_at_snr
from flow_omni.audio.perturb import MAX_FACTOR, MAX_RT60, MAX_SEMITONES, add_reverb, pitch_shift, speed_perturb
from flow_omni.checkpoint import atomic_write
from flow_omni.checks import check_number, check_output_file
from flow_omni.errors import AudioError, ConfigError
from flow_omni.plotting import PLOT_EXTENSIONS, plot_mels
from flow_omni.vocoder import GRIFFIN_LIM_NAMES, GriffinLim, StreamingVocoder, load_vocoder

#: ``-o`` of the commands that write audio (here and in :mod:`flow_omni.cli.speak`).
AUDIO_OUTPUT_HELP = f"audio file to write, in the format its extension names: {', '.join(AUDIO_OUTPUT_FORMATS)}"


def mel_command(args: argparse.Namespace) -> None:
    """plot the Vocos-24k log-mel of one or more audio files as PNG

    Each file is a panel; the panels share the time axis and one colour scale (the lowest to the highest
    value over all files), so equal colours are equal values. --vmin/--vmax fix the scale instead, so
    that plots made one at a time can be compared too.
    """
    check_output_file(args.output, "-o", PLOT_EXTENSIONS)
    if args.save_tensor:
        if len(args.audio) > 1:
            raise ConfigError(f"--save-tensor writes the mel of one file; {len(args.audio)} audio files were given")
        check_output_file(args.save_tensor, "--save-tensor", (".safetensors",))
    check_number(args.max_seconds, "--max-seconds", low=0.0, low_open=True)
    for value, name in ((args.vmin, "--vmin"), (args.vmax, "--vmax")):
        if value is not None:
            check_number(value, name)
    cfg = MelConfig()
    mels, seconds = [], []
    for path in args.audio:
        audio = load_audio(path, cfg.sample_rate, max_seconds=args.max_seconds)
        mels.append((Path(path).name, LogMel(cfg)(audio)))
        seconds.append(audio.shape[0] / cfg.sample_rate)
    vmin = min(float(m.min()) for _, m in mels) if args.vmin is None else args.vmin
    vmax = max(float(m.max()) for _, m in mels) if args.vmax is None else args.vmax
    if vmin >= vmax:
        raise ConfigError(f"the colour scale must run upwards: --vmin {vmin:g} is not below --vmax {vmax:g}")
    png = plot_mels(mels, args.output, frame_rate=cfg.frame_rate, sample_rate=cfg.sample_rate, vmin=vmin, vmax=vmax)
    for path, (_, mel), secs in zip(args.audio, mels, seconds):
        print(f"{path}: {mel.shape[-1]} frames x {mel.shape[-2]} bins ({secs:.2f} s)")
    print(f"colour scale {vmin:.2f} to {vmax:.2f} (natural log of mel magnitude) -> {png}")
    if args.save_tensor:
        mel = mels[0][1]
        atomic_write(args.save_tensor, lambda tmp: save_file({"mel": mel.contiguous()}, str(tmp)))
        print(f"mel tensor -> {args.save_tensor}")


def mel_arguments(m: argparse.ArgumentParser) -> None:
    m.add_argument("audio", nargs="+", help="audio file(s); each becomes a panel")
    m.add_argument("-o", "--output", default="mel.png", help=f"the plot: {', '.join(PLOT_EXTENSIONS)}")
    m.add_argument("--vmin", type=float, help="bottom of the colour scale (default: the lowest value of all files)")
    m.add_argument("--vmax", type=float, help="top of the colour scale (default: the highest value of all files)")
    m.add_argument("--save-tensor", help="also write the mel as a .safetensors file (one audio file only)")
    m.add_argument("--max-seconds", type=float, default=600.0)


def augment_command(args: argparse.Namespace) -> None:
    """apply noise / speed / pitch / reverb to an audio file"""
    sr = 24000
    audio_output_format(args.output, "-o")
    check_number(args.speed, "--speed", low=0.0, low_open=True, high=MAX_FACTOR)
    check_number(args.pitch, "--pitch (semitones)", low=-MAX_SEMITONES, high=MAX_SEMITONES)
    check_number(args.rt60, "--rt60 (seconds, 0 = no room)", low=0.0, high=MAX_RT60)
    check_number(args.snr, "--snr (dB)", low=-MAX_SNR_DB, high=MAX_SNR_DB)
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    if args.babble_from and args.noise != "babble":
        raise ConfigError("--babble-from gives the talkers of babble noise; it needs --noise babble")
    rng = np.random.default_rng(args.seed)
    audio = load_audio(args.audio, sr, allow_silent=False)
    talkers = "synthetic talkers (--babble-from FILES for real ones)"
    babble_pool = None
    if args.noise == "babble":
        if args.babble_from:
            babble_pool = [load_audio(p, sr, allow_silent=False) for p in args.babble_from]
            talkers = f"{len(babble_pool)} given file(s)"
        else:
            babble_pool = synthetic_babble_pool(sr)
    applied = []
    try:  # the input can be long enough to read and still too short for a step (a pitch shift's STFT)
        if args.speed != 1.0:
            audio = speed_perturb(audio, args.speed, sr)
            applied.append(f"speed x{args.speed}")
        if args.pitch:
            audio = pitch_shift(audio, args.pitch, sr)
            applied.append(f"pitch {args.pitch:+g} semitones")
        if args.rt60:
            audio = add_reverb(audio, sr, args.rt60, rng)
            applied.append(f"reverb RT60 {args.rt60} s")
        if args.noise:
            noise = make_noise(args.noise, audio.shape[0], rng, utterances=babble_pool)
            audio, scaled = mix_at_snr(audio, noise, args.snr, rng, return_noise=True)
            clean = audio - scaled
            source = f" from {talkers}" if args.noise == "babble" else ""
            applied.append(f"{args.noise} noise{source} at {measure_snr_db(clean, scaled):.2f} dB SNR")
    except AudioError as exc:
        raise AudioError(f"{args.audio}: {exc}") from None
    save_audio(args.output, audio, sr)
    print(f"{', '.join(applied) or 'nothing applied'} -> {args.output}")


def augment_arguments(a: argparse.ArgumentParser) -> None:
    a.add_argument("audio")
    a.add_argument("-o", "--output", required=True, help=AUDIO_OUTPUT_HELP)
    a.add_argument("--noise", choices=["white", "pink", "brown", "babble"])
    a.add_argument("--snr", type=float, default=10.0, help="SNR in dB for --noise (default 10)")
    a.add_argument(
        "--babble-from", nargs="+", help="audio files whose mix makes the babble (default: synthetic talkers)"
    )
    a.add_argument(
        "--speed", type=float, default=1.0, help=f"speed factor (tempo and pitch together), > 0 and <= {MAX_FACTOR:g}"
    )
    a.add_argument("--pitch", type=float, default=0.0, help=f"pitch shift in semitones, within ±{MAX_SEMITONES:g}")
    a.add_argument(
        "--rt60", type=float, default=0.0, help=f"room reverberation time in seconds, up to {MAX_RT60:g} (0: none)"
    )
    a.add_argument("--seed", type=int, default=0)


def vocode_command(args: argparse.Namespace) -> None:
    """copy-synthesis: audio → mel → vocoder → audio"""
    audio_output_format(args.output, "-o")
    if args.chunk_frames < 0:
        raise ConfigError(f"--chunk-frames must be >= 0 (0 decodes the whole mel at once), got {args.chunk_frames}")
    if args.chunk_frames and (args.vocoder is None or args.vocoder in GRIFFIN_LIM_NAMES):
        # Refused rather than warned: a user who asks for streaming wants to hear or time the streamed
        # decode, and Griffin-Lim has no streaming form (each iteration needs the whole mel), so a file
        # decoded at once under that name would answer another question than the one asked.
        raise ConfigError(
            f"--chunk-frames {args.chunk_frames} streams a Vocos decode, but the vocoder is Griffin-Lim, which "
            "needs the whole mel at once; give --vocoder DIR (a trained Vocos) or drop --chunk-frames"
        )
    audio = load_audio(args.audio)
    mel = LogMel()(audio)
    t0 = time.perf_counter()
    voc = load_vocoder(args.vocoder)
    if isinstance(voc, GriffinLim):
        out = voc.decode(mel)
        how = "Griffin-Lim"
    elif args.chunk_frames:
        stream = StreamingVocoder(voc)
        pieces = [stream.push(mel[:, i : i + args.chunk_frames]) for i in range(0, mel.shape[-1], args.chunk_frames)]
        out = torch.cat(pieces + [stream.flush()])
        how = f"Vocos ({args.vocoder}), streamed in {args.chunk_frames}-frame chunks"
    else:
        out = voc.decode(mel)
        how = f"Vocos ({args.vocoder})"
    secs = time.perf_counter() - t0
    save_audio(args.output, out)
    print(f"{how}: {out.shape[0] / 24000:.2f} s of audio in {secs:.2f} s -> {args.output}")


def vocode_arguments(v: argparse.ArgumentParser) -> None:
    v.add_argument("audio")
    v.add_argument("-o", "--output", required=True, help=AUDIO_OUTPUT_HELP)
    v.add_argument("--vocoder", default="griffinlim", help="'griffinlim' or a Vocos checkpoint directory / hub id")
    v.add_argument(
        "--chunk-frames",
        type=int,
        default=0,
        help="stream the Vocos decode in chunks of this many frames (a trained Vocos only: Griffin-Lim refuses it)",
    )
