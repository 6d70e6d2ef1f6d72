"""``flow-omni`` subcommands that use trained models: ``speak``, ``answer``, ``bench robustness``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_bench_robustness(args: argparse.Namespace) -> None:
    from flow_omni.config import parse_overrides
    from flow_omni.bench import RobustnessConfig, run_robustness

    cfg = RobustnessConfig.load(args.config) if args.config else RobustnessConfig()
    cfg = cfg.merged(parse_overrides(args.set or []))
    if args.out:
        cfg = cfg.merged({"out_dir": args.out})
    report = run_robustness(cfg, progress=not args.no_progress)
    print(f"\nreport:  {report}")
    print(f"numbers: {report.parent / 'results.json'}, {report.parent / 'results.csv'}")
    print(f"plots:   {', '.join(p.name for p in sorted(report.parent.glob('*.png')))}")
    print(f"audio:   {report.parent / 'wavs'}")


def _stream_to_wav(model, sample, out: Path, args) -> None:
    """Run ``model.stream`` and append audio to ``out`` as it arrives (renamed into place at the end)."""
    import os
    import tempfile
    import time

    import soundfile as sf
    import torch

    from flow_omni.audio.io import TARGET_SAMPLE_RATE
    from flow_omni.vocoder import GriffinLim, load_vocoder

    vocoder = load_vocoder(args.vocoder)
    streamed = None if isinstance(vocoder, GriffinLim) else vocoder  # Griffin-Lim needs the whole mel
    gen = dict(max_new_positions=args.max_positions, speech_temperature=args.temperature, seed=args.seed,
               steps=args.flow_steps)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".wav", dir=out.parent)
    os.close(fd)
    t0 = time.perf_counter()
    first = None
    seconds = 0.0
    mels, text = [], ""
    try:
        with sf.SoundFile(tmp, "w", samplerate=TARGET_SAMPLE_RATE, channels=1, subtype="PCM_16") as fh:
            for ev in model.stream(sample, vocoder=streamed, **gen):
                if ev.kind == "text":
                    text += ev.text
                    if args.show_text:
                        print(ev.text, end="", flush=True)
                elif ev.kind == "mel":
                    mels.append(ev.mel)
                elif ev.kind == "audio":
                    first = first if first is not None else time.perf_counter() - t0
                    fh.write(ev.audio.clamp(-1, 1).numpy())
                    seconds += ev.audio.shape[0] / TARGET_SAMPLE_RATE
            if streamed is None and mels:  # Griffin-Lim: one write at the end
                audio = vocoder.decode(torch.cat(mels, dim=-1))
                first = time.perf_counter() - t0
                fh.write(audio.clamp(-1, 1).numpy())
                seconds = audio.shape[0] / TARGET_SAMPLE_RATE
        if seconds == 0:
            raise_no_speech(text)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    total = time.perf_counter() - t0
    how = "Griffin-Lim (give --vocoder DIR for Vocos)" if streamed is None else f"Vocos ({args.vocoder}), streamed"
    if args.show_text:
        print()
    print(f"text: {text!r}")
    print(f"{seconds:.2f} s of audio in {total:.2f} s (RTF {total / max(seconds, 1e-9):.2f}, first audio after "
          f"{first:.2f} s); vocoder: {how} -> {out}")


def raise_no_speech(text: str) -> None:
    from flow_omni.errors import FlowOmniError

    raise FlowOmniError(f"the model produced no speech (its text was {text!r}); is the checkpoint trained for "
                        "speech output? raise --max-positions if it was cut short")


def _cmd_speak(args: argparse.Namespace) -> None:
    from flow_omni import FlowOmni, Sample

    model = FlowOmni.from_pretrained(args.model)
    _stream_to_wav(model, Sample("T2A", prompt_text=args.text), Path(args.output), args)


def _cmd_answer(args: argparse.Namespace) -> None:
    from flow_omni import FlowOmni, Sample
    from flow_omni.audio.io import load_audio

    model = FlowOmni.from_pretrained(args.model)
    audio = load_audio(args.question, max_seconds=60.0, allow_silent=False)
    _stream_to_wav(model, Sample("A2A", prompt_audio=model.prepare_audio(audio)), Path(args.output), args)


def _generation_args(p) -> None:
    p.add_argument("-o", "--output", required=True, help="WAV file to write (streamed as audio is produced)")
    p.add_argument("--model", required=True, help="a trained FlowOmni folder (save_pretrained / train's model/)")
    p.add_argument("--vocoder", default="griffinlim", help="Vocos checkpoint folder, or 'griffinlim' (default)")
    p.add_argument("--temperature", type=float, default=0.0, help="speech sampling temperature (0 = greedy)")
    p.add_argument("--flow-steps", type=int, default=10, help="ODE steps of the flow head per token")
    p.add_argument("--max-positions", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show-text", action="store_true", help="print the text stream as it is generated")


def add_commands(sub) -> None:
    s = sub.add_parser("speak", help="text → speech with a trained model, streamed to a WAV file")
    s.add_argument("text")
    _generation_args(s)
    s.set_defaults(func=_cmd_speak)
    a = sub.add_parser("answer", help="spoken question (audio file) → spoken answer, streamed to a WAV file")
    a.add_argument("question", help="audio file with the question")
    _generation_args(a)
    a.set_defaults(func=_cmd_answer)

    b = sub.add_parser("bench", help="benchmarks that train and evaluate models (robustness)")
    bsub = b.add_subparsers(dest="bench_command", required=True)
    r = bsub.add_parser("robustness", help="continuous vs discrete tokens under noise, pitch, rate and unseen voices",
                        description="Train every variant (continuous, k-means, RVQ, low-rate) with the same budget "
                        "for each seed, score ASR / TTS / spoken QA under each condition, and write report.md, "
                        "PNG plots, sample WAVs and results.json/csv. Finished runs are reused, so rerunning "
                        "the command resumes a long benchmark.")
    r.add_argument("--config", help="RobustnessConfig as YAML (default: the full benchmark)")
    r.add_argument("--set", nargs="*", action="extend", metavar="KEY=VALUE",
                   help="override entries, e.g. seeds=[0] max_items=8")
    r.add_argument("--out", help="output directory (overrides out_dir)")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=_cmd_bench_robustness)
