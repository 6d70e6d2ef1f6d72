"""``flow-omni`` commands that run a trained model: ``speak`` (text → speech), ``answer`` (speech → speech)
and ``transcribe`` (speech → text)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import soundfile as sf
import torch

from flow_omni.audio.io import TARGET_SAMPLE_RATE, audio_output_format, load_audio
from flow_omni.checkpoint import atomic_write
from flow_omni.cli.audio import AUDIO_OUTPUT_HELP
from flow_omni.errors import FlowOmniError, UnknownCharactersWarning
from flow_omni.eval.timing import real_time_factor
from flow_omni.layout import Sample
from flow_omni.models.flow_omni import FlowOmni
from flow_omni.models.generation import AUDIO_CHUNK_FRAMES, GenerationConfig
from flow_omni.text.tokenizer import unknown_characters_message
from flow_omni.vocoder import GriffinLim, load_vocoder


def stream_to_file(model: FlowOmni, sample: Sample, out: Path, gen: GenerationConfig, args: argparse.Namespace) -> None:
    """Run ``model.stream`` and append audio to ``out`` as it arrives, in the format its extension names
    (written under a temporary name and renamed into place at the end)."""
    fmt, subtype = audio_output_format(out, "-o")
    vocoder = load_vocoder(args.vocoder)
    streamed = None if isinstance(vocoder, GriffinLim) else vocoder  # Griffin-Lim needs the whole mel
    t0 = time.perf_counter()
    first = None
    seconds = 0.0
    text = ""

    def write(tmp: Path) -> None:
        nonlocal first, seconds, text
        mels = []
        with sf.SoundFile(tmp, "w", samplerate=TARGET_SAMPLE_RATE, channels=1, subtype=subtype, format=fmt) as fh:
            # The command has said which characters were lost (or refused them with --strict).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UnknownCharactersWarning)
                chunk = getattr(args, "audio_chunk_frames", AUDIO_CHUNK_FRAMES)
                for ev in model.stream(sample, gen, vocoder=streamed, audio_chunk_frames=chunk):
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

    atomic_write(out, write)
    total = time.perf_counter() - t0
    how = "Griffin-Lim (give --vocoder DIR for Vocos)" if streamed is None else f"Vocos ({args.vocoder}), streamed"
    if args.show_text:
        print()
    print(f"text: {text!r}")
    print(
        f"{seconds:.2f} s of audio in {total:.2f} s (RTF {real_time_factor(total, seconds):.2f}, first audio after "
        f"{first:.2f} s); vocoder: {how} -> {out}"
    )


def raise_no_speech(text: str) -> None:
    # An untrained model's text can be hundreds of blanks: show it stripped and cut, with its length.
    shown = text.strip()
    shown = repr(shown if len(shown) <= 60 else shown[:60] + "...")
    raise FlowOmniError(
        f"the model produced no speech (its text, {len(text)} characters, was {shown}); is the checkpoint "
        "trained for speech output? raise --max-positions if it was cut short"
    )


def _generation_config(args: argparse.Namespace) -> GenerationConfig:
    """The generation settings of ``speak``/``answer``, checked (with ``-o``) before the model is loaded."""
    audio_output_format(args.output, "-o")
    return GenerationConfig(
        max_new_positions=args.max_positions,
        speech_temperature=args.temperature,
        seed=args.seed,
        steps=args.flow_steps,
        compile=args.compile,
    )


def speak_command(args: argparse.Namespace) -> None:
    """text → speech with a trained model, streamed to an audio file

    Characters the model's text tokenizer does not know (emoji, CJK, control characters) are read as
    <unk>: they are named on stderr, or refused with --strict.
    """
    gen = _generation_config(args)
    model = FlowOmni.from_pretrained(args.model)
    unknown = unknown_characters_message(model.text_tokenizer, args.text)
    if unknown and args.strict:
        raise FlowOmniError(f"the text has characters the model cannot read: {unknown}; remove them or drop --strict")
    if unknown:
        print(f"flow-omni speak: warning: {unknown}", file=sys.stderr)
    stream_to_file(model, Sample("T2A", prompt_text=args.text), Path(args.output), gen, args)


def speak_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("text")
    s.add_argument(
        "--strict", action="store_true", help="refuse a text with characters the model's tokenizer does not know"
    )
    _generation_arguments(s)


def answer_command(args: argparse.Namespace) -> None:
    """spoken question (audio file) → spoken answer, streamed to an audio file"""
    gen = _generation_config(args)
    audio = load_audio(args.question, max_seconds=60.0, allow_silent=False)
    model = FlowOmni.from_pretrained(args.model)
    stream_to_file(model, Sample("A2A", prompt_audio=model.prepare_audio(audio)), Path(args.output), gen, args)


def answer_arguments(a: argparse.ArgumentParser) -> None:
    a.add_argument("question", help="audio file with the question")
    _generation_arguments(a)


def transcribe_command(args: argparse.Namespace) -> None:
    """speech → text (ASR) with a trained model: greedy transcripts of one or more audio files

    Prints one line per file (``path<TAB>text``), or with ``--json`` one JSON list of
    ``{"audio", "text"}``. Every file is read and checked before the model runs.
    """
    if args.batch_size < 1 or args.max_positions < 1:
        raise FlowOmniError(
            f"--batch-size and --max-positions must be >= 1, got {args.batch_size} and {args.max_positions}"
        )
    model = FlowOmni.from_pretrained(args.model)
    audios = [load_audio(path, max_seconds=60.0, allow_silent=False) for path in args.audio]
    features = [model.prepare_audio(a) for a in audios]
    texts: list[str] = []
    for start in range(0, len(features), args.batch_size):
        out = model.generate(
            [Sample("A2T", prompt_audio=f) for f in features[start : start + args.batch_size]],
            text_temperature=0.0,
            max_new_positions=args.max_positions,
        )
        texts += [g.text for g in out]
    if args.json:
        print(json.dumps([{"audio": a, "text": t} for a, t in zip(args.audio, texts)], ensure_ascii=False))
    else:
        for a, t in zip(args.audio, texts):
            print(f"{a}\t{t}")


def transcribe_arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("audio", nargs="+", help="audio files to transcribe")
    t.add_argument("--model", required=True, help="a trained FlowOmni folder (save_pretrained / train's model/)")
    t.add_argument("--json", action="store_true", help="print a JSON list of {audio, text} instead of lines")
    t.add_argument("--batch-size", type=int, default=8, help="files transcribed together")
    t.add_argument("--max-positions", type=int, default=300, help="generated text positions at most")


def _generation_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, help=AUDIO_OUTPUT_HELP + " (streamed as audio is produced)")
    p.add_argument("--model", required=True, help="a trained FlowOmni folder (save_pretrained / train's model/)")
    p.add_argument("--vocoder", default="griffinlim", help="Vocos checkpoint folder, or 'griffinlim' (default)")
    p.add_argument("--temperature", type=float, default=0.0, help="speech sampling temperature (0 = greedy)")
    p.add_argument("--flow-steps", type=int, default=10, help="ODE steps of the flow head per token")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the flow head's sampling (faster per token; the first token compiles for seconds)",
    )
    p.add_argument("--max-positions", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show-text", action="store_true", help="print the text stream as it is generated")
    p.add_argument(
        "--audio-chunk-frames",
        type=int,
        default=AUDIO_CHUNK_FRAMES,
        help="largest Vocos chunk in mel frames: streamed audio chunks start at 1 frame and double up to this "
        "(smaller: more vocoder work; the audio is the same)",
    )
