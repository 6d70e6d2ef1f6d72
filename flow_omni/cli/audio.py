"""``flow-omni`` commands on audio files: ``mel``, ``augment``, ``vocode``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from flow_omni.audio import LogMel, MelConfig, load_audio, save_audio
from flow_omni.audio.noise import make_noise, measure_snr_db, mix_at_snr
from flow_omni.audio.perturb import add_reverb, pitch_shift, speed_perturb
from flow_omni.plotting import plot_mels
from flow_omni.vocoder import GriffinLim, StreamingVocoder, load_vocoder


def mel_command(args: argparse.Namespace) -> None:
    """plot the Vocos-24k log-mel of an audio file as PNG"""
    cfg = MelConfig()
    audio = load_audio(args.audio, cfg.sample_rate, max_seconds=args.max_seconds)
    mel = LogMel(cfg)(audio)
    png = plot_mels([(Path(args.audio).name, mel)], args.output, frame_rate=cfg.frame_rate)
    print(f"{mel.shape[-1]} frames x {mel.shape[-2]} bins ({audio.shape[0] / cfg.sample_rate:.2f} s) -> {png}")
    if args.save_tensor:
        save_file({"mel": mel.contiguous()}, args.save_tensor)
        print(f"mel tensor -> {args.save_tensor}")


def mel_arguments(m: argparse.ArgumentParser) -> None:
    m.add_argument("audio")
    m.add_argument("-o", "--output", default="mel.png")
    m.add_argument("--save-tensor", help="also write the mel as a .safetensors file")
    m.add_argument("--max-seconds", type=float, default=600.0)


def augment_command(args: argparse.Namespace) -> None:
    """apply noise / speed / pitch / reverb to an audio file"""
    sr = 24000
    rng = np.random.default_rng(args.seed)
    audio = load_audio(args.audio, sr, allow_silent=False)
    applied = []
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
        babble_pool = [load_audio(p, sr) for p in args.babble_from] if args.babble_from else None
        noise = make_noise(args.noise, audio.shape[0], rng, utterances=babble_pool)
        audio, scaled = mix_at_snr(audio, noise, args.snr, rng, return_noise=True)
        clean = audio - scaled
        applied.append(f"{args.noise} noise at {measure_snr_db(clean, scaled):.2f} dB SNR")
    save_audio(args.output, audio, sr)
    print(f"{', '.join(applied) or 'nothing applied'} -> {args.output}")


def augment_arguments(a: argparse.ArgumentParser) -> None:
    a.add_argument("audio")
    a.add_argument("-o", "--output", required=True)
    a.add_argument("--noise", choices=["white", "pink", "brown", "babble"])
    a.add_argument("--snr", type=float, default=10.0, help="SNR in dB for --noise (default 10)")
    a.add_argument("--babble-from", nargs="+", help="audio files whose mix makes the babble")
    a.add_argument("--speed", type=float, default=1.0, help="speed factor (tempo and pitch together)")
    a.add_argument("--pitch", type=float, default=0.0, help="pitch shift in semitones")
    a.add_argument("--rt60", type=float, default=0.0, help="room reverberation time in seconds")
    a.add_argument("--seed", type=int, default=0)


def vocode_command(args: argparse.Namespace) -> None:
    """copy-synthesis: audio → mel → vocoder → audio"""
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
    v.add_argument("-o", "--output", required=True)
    v.add_argument("--vocoder", default="griffinlim", help="'griffinlim' or a Vocos checkpoint directory / hub id")
    v.add_argument("--chunk-frames", type=int, default=0, help="stream the Vocos decode in chunks of this many frames")
