"""The ``flow-omni`` console command.

Each job a user runs from a shell is a subcommand with its own ``--help``. Errors that come from
bad input (a missing file, a wrong sample rate, an unknown config key) are printed as one line and
exit with status 2 instead of a traceback; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Never hang on hub retries: the library only uses local files unless the user opts in.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _cmd_demo(args: argparse.Namespace) -> None:
    import time

    from flow_omni.config import parse_overrides
    from flow_omni.bench import RobustnessConfig, run_robustness

    cfg = RobustnessConfig.demo(args.out).merged(parse_overrides(args.set or []))
    t0 = time.perf_counter()
    report = run_robustness(cfg, progress=not args.no_progress)
    out = report.parent
    print(f"\ndemo finished in {(time.perf_counter() - t0) / 60:.1f} min: continuous vs discrete speech tokens, "
          f"{len(cfg.variants)} variants x {len(cfg.conditions()) + 1} conditions")
    print(f"report:  {report}")
    print(f"plots:   {', '.join(str(p) for p in sorted(out.glob('*.png')))}")
    print(f"audio:   {out / 'wavs'}  (inputs as heard, spoken answers, TTS outputs)")
    print(f"numbers: {out / 'results.json'}, {out / 'results.csv'}")
    print(f"models:  {out / 'runs'}  (try: flow-omni speak \"what is two plus three\" -o hi.wav "
          f"--model {out / 'runs' / 'continuous-seed0' / 'model'})")


def _cmd_roundtrip(args: argparse.Namespace) -> None:
    from flow_omni.roundtrip import RoundTripConfig, run_roundtrip
    from flow_omni.vocoder import GriffinLim, load_vocoder

    cfg = RoundTripConfig(seed=args.seed)
    if args.config:
        cfg = RoundTripConfig.load(args.config)
    if args.steps is not None:
        cfg = cfg.merged({"train_steps": args.steps})
    vocoder = load_vocoder(args.vocoder, n_iter=cfg.griffin_lim_iters)
    name = None if isinstance(vocoder, GriffinLim) else f"Vocos from {args.vocoder}"
    result = run_roundtrip(args.out, cfg, vocoder=vocoder, vocoder_name=name)
    print(f"\nround-trip finished: CFM loss {result['first_loss']:.3f} -> {result['final_loss']:.3f}, "
          f"mel L1 generated vs original {result['mel_l1_generated_vs_original']} (temperature 0: {result['mel_l1_temperature0_vs_original']}) "
          f"(coarse-only baseline {result['mel_l1_coarse_only_vs_original']})")
    print(f"vocoder: {result['vocoder']}")
    print(f"report: {Path(args.out) / 'report.md'}")
    for f in result["files"]:
        print(f"  {f}")


def _cmd_mel(args: argparse.Namespace) -> None:
    from flow_omni.audio import LogMel, MelConfig, load_audio
    from flow_omni.plotting import plot_mels

    cfg = MelConfig()
    audio = load_audio(args.audio, cfg.sample_rate, max_seconds=args.max_seconds)
    mel = LogMel(cfg)(audio)
    png = plot_mels([(Path(args.audio).name, mel)], args.output, frame_rate=cfg.frame_rate)
    print(f"{mel.shape[-1]} frames x {mel.shape[-2]} bins ({audio.shape[0] / cfg.sample_rate:.2f} s) -> {png}")
    if args.save_tensor:
        from safetensors.torch import save_file

        save_file({"mel": mel.contiguous()}, args.save_tensor)
        print(f"mel tensor -> {args.save_tensor}")


def _cmd_augment(args: argparse.Namespace) -> None:
    import numpy as np

    from flow_omni.audio import load_audio, save_audio
    from flow_omni.audio.noise import make_noise, measure_snr_db, mix_at_snr
    from flow_omni.audio.perturb import add_reverb, pitch_shift, speed_perturb

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


def _cmd_vocode(args: argparse.Namespace) -> None:
    import time

    import torch

    from flow_omni.audio import LogMel, load_audio, save_audio
    from flow_omni.vocoder import GriffinLim, StreamingVocoder, load_vocoder

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flow-omni", description="Speech LLMs with continuous speech tokens.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="the main job on the built-in default: continuous vs discrete speech tokens, "
                       "trained and compared under noise (~15 min on 2 CPU cores)",
                       description="Build the default synthetic corpus, train the continuous variant and a k-means "
                       "variant with the same budget, run a reduced robustness benchmark (ASR, TTS, spoken QA under "
                       "clean / noisy / pitch-shifted / unseen-voice input) and write report.md, PNG plots, WAVs "
                       "and results.json/csv. The full benchmark is `flow-omni bench robustness`.")
    d.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    d.add_argument("--set", nargs="*", action="extend", metavar="KEY=VALUE",
                   help="override RobustnessConfig entries, e.g. seeds=[0,1]")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=_cmd_demo)

    rt = sub.add_parser("roundtrip", help="audio → mel tokens → flow head → vocoder round-trip (no LLM; ~90 s)",
                        description="Synthesise speech, train a flow head on its mel tokens, generate a held-out "
                        "utterance's mel, vocode it; writes WAVs, PNGs and report.md.")
    d = rt
    d.add_argument("--out", default="roundtrip_out", help="output directory (default: roundtrip_out)")
    d.add_argument("--config", help="RoundTripConfig as YAML/JSON")
    d.add_argument("--steps", type=int, help="override the number of training steps")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--vocoder", default="griffinlim",
                   help="'griffinlim' (default; no weights needed) or a Vocos checkpoint directory / hub id")
    d.set_defaults(func=_cmd_roundtrip)

    m = sub.add_parser("mel", help="plot the Vocos-24k log-mel of an audio file as PNG")
    m.add_argument("audio")
    m.add_argument("-o", "--output", default="mel.png")
    m.add_argument("--save-tensor", help="also write the mel as a .safetensors file")
    m.add_argument("--max-seconds", type=float, default=600.0)
    m.set_defaults(func=_cmd_mel)

    a = sub.add_parser("augment", help="apply noise / speed / pitch / reverb to an audio file")
    a.add_argument("audio")
    a.add_argument("-o", "--output", required=True)
    a.add_argument("--noise", choices=["white", "pink", "brown", "babble"])
    a.add_argument("--snr", type=float, default=10.0, help="SNR in dB for --noise (default 10)")
    a.add_argument("--babble-from", nargs="+", help="audio files whose mix makes the babble")
    a.add_argument("--speed", type=float, default=1.0, help="speed factor (tempo and pitch together)")
    a.add_argument("--pitch", type=float, default=0.0, help="pitch shift in semitones")
    a.add_argument("--rt60", type=float, default=0.0, help="room reverberation time in seconds")
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=_cmd_augment)

    v = sub.add_parser("vocode", help="copy-synthesis: audio → mel → vocoder → audio")
    v.add_argument("audio")
    v.add_argument("-o", "--output", required=True)
    v.add_argument("--vocoder", default="griffinlim", help="'griffinlim' or a Vocos checkpoint directory / hub id")
    v.add_argument("--chunk-frames", type=int, default=0, help="stream the Vocos decode in chunks of this many frames")
    v.set_defaults(func=_cmd_vocode)

    from flow_omni import cli_eval, cli_train

    cli_train.add_commands(sub)
    cli_eval.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from flow_omni.errors import FlowOmniError

    try:
        args.func(args)
    except FlowOmniError as exc:
        if args.debug:
            raise
        print(f"flow-omni {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
