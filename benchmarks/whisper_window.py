"""Benchmark: pretrained Whisper tiny.en encoder on a window shorter than its 30 s.

Whisper is trained on 30 s windows (1500 positions); every input is padded to 30 s, so a 3 s
utterance costs as much as a 30 s one. This script encodes ``--n`` offline espeak utterances
(``flow_omni.data.espeak``, sentences from ``flow_omni.data.texts``, voices cycling through
``default_voices()``) with ``SpeechEncoder(kind="whisper", whisper_path="builtin:tiny.en")`` at
several windows (``whisper_window_seconds``):

- ``30`` (the reference), each ``--windows`` value in seconds, ``ceil``: the utterance's own length
  rounded up to a whole second, and ``exact``: its own length (no padding at all);

and prints one Markdown table with, per window, over the utterances' valid (non-padding) frames:

- cosine similarity of the encoder output to the 30 s output: mean over utterances of the
  per-utterance frame mean, the worst utterance's mean, and the worst single frame;
- the encoder time per utterance (``time.perf_counter``, median of ``--repeats`` calls after a
  warm-up, ``torch.set_num_threads(--threads)``), features excluded (the same for all windows);
- greedy transcripts (Whisper's own decoder, converted alongside, over the window's encoder output):
  how many equal the 30 s transcript, and WER against the text that espeak spoke.

With ``--json PATH`` it also writes the settings, commit, machine and every per-utterance number.

    python benchmarks/whisper_window.py --json benchmarks/results/whisper_window.json
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import time
from pathlib import Path

import torch
from record import write_result  # benchmarks/record.py, beside this script
from tokenizers import Tokenizer
from transformers import WhisperForConditionalGeneration

from flow_omni.data.espeak import default_voices, synthesize
from flow_omni.data.texts import generate_sentences
from flow_omni.eval.text_metrics import wer
from flow_omni.models.speech_encoder import WHISPER_FRAME_RATE, SpeechEncoder, SpeechEncoderConfig
from flow_omni.models.whisper_weights import builtin_whisper, ct2_source

SOT, NO_TIMESTAMPS, EOT = 50257, 50362, 50256  # tiny.en special tokens
MAX_TOKENS = 60


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=20, help="utterances")
    p.add_argument("--windows", type=float, nargs="+", default=[10.0], help="fixed windows in seconds (besides 30)")
    p.add_argument("--max-seconds", type=float, default=9.5, help="longest utterance kept (must fit every window)")
    p.add_argument("--repeats", type=int, default=3, help="timed encoder calls per utterance and window (median)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args()


def utterances(n: int, seed: int, max_seconds: float) -> list[tuple[str, str, torch.Tensor]]:
    """``n`` (text, voice, 24 kHz audio): one sentence, or two for every third item (longer inputs)."""
    rng = random.Random(seed)
    sentences = iter(generate_sentences(3 * n, rng))
    voices = default_voices()
    out = []
    while len(out) < n:
        text = next(sentences)
        if len(out) % 3 == 2:
            text = f"{text} {next(sentences)}"
        voice = voices[(7 * len(out)) % len(voices)]
        audio = synthesize(text, voice)
        if audio.shape[0] / 24000 <= max_seconds:
            out.append((text, voice, audio))
    return out


def greedy(model: WhisperForConditionalGeneration, memory: torch.Tensor, tokenizer: Tokenizer) -> str:
    """Plain greedy decoding (no suppression, no timestamps) of ``memory`` ``(1, N, 384)``."""
    ids, past = [SOT, NO_TIMESTAMPS], None
    step = torch.tensor([ids])
    for _ in range(MAX_TOKENS):
        out = model(encoder_outputs=(memory,), decoder_input_ids=step, past_key_values=past, use_cache=True)
        past = out.past_key_values
        ids.append(int(out.logits[0, -1].argmax()))
        if ids[-1] == EOT:
            break
        step = torch.tensor([[ids[-1]]])
    return tokenizer.decode([i for i in ids[2:] if i != EOT]).strip()


def whisper_pad(feats: torch.Tensor, n_frames: int) -> torch.Tensor:
    """``(F, 80)`` → ``(n_frames, 80)`` padded with the log-mel of silence (item max - 2), as SpeechEncoder pads."""
    return torch.cat([feats, (feats.max() - 2.0).expand(n_frames - feats.shape[0], feats.shape[1])])


def main() -> None:
    args = parse_args()
    load_at_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    folder = builtin_whisper("tiny.en")
    model = WhisperForConditionalGeneration.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
    tokenizer = Tokenizer.from_file(str(ct2_source("tiny.en") / "tokenizer.json"))
    fixed = {30.0, *args.windows}
    encoders: dict[float, SpeechEncoder] = {}

    def encoder(seconds: float) -> SpeechEncoder:
        """The public route (whisper_window_seconds); fixed windows are kept, per-utterance ones rebuilt."""
        if seconds in encoders:
            return encoders[seconds]
        cfg = SpeechEncoderConfig(kind="whisper", whisper_path="builtin:tiny.en", whisper_window_seconds=seconds)
        enc = SpeechEncoder(cfg, 1, 1).eval()
        if seconds in fixed:
            encoders[seconds] = enc
        return enc

    utts = utterances(args.n, args.seed, args.max_seconds)
    labels = ["30 s"] + [f"{w:g} s" for w in args.windows] + ["own length, ceil to 1 s", "own length, exact"]
    rows = {label: [] for label in labels}
    for text, voice, audio in utts:
        feats = encoder(30.0).featurize(audio)  # the same features whatever the window
        frames = feats.shape[0]
        n_out = -(-frames // 2)
        windows = [30.0, *args.windows, float(math.ceil(frames / 100)), n_out / WHISPER_FRAME_RATE]
        ref = None
        for label, seconds in zip(labels, windows):
            body = encoder(seconds).body
            x, lengths = feats[None], torch.tensor([frames])
            with torch.no_grad():
                body(x, lengths)  # warm-up
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    h = body(x, lengths)[0]
                    times.append(time.perf_counter() - t0)
                # Whisper's decoder reads the whole window (padding frames included), as in Whisper itself.
                memory = body.encoder(whisper_pad(feats, body.n_frames).T[None]).last_hidden_state
                hyp = greedy(model, memory, tokenizer)
            if ref is None:
                ref = (h, hyp)
            cos = torch.nn.functional.cosine_similarity(h[:n_out], ref[0][:n_out], dim=-1)
            rows[label].append(
                dict(
                    text=text,
                    voice=voice,
                    seconds=round(audio.shape[0] / 24000, 3),
                    window=seconds,
                    cos_mean=float(cos.mean()),
                    cos_min=float(cos.min()),
                    encoder_s=statistics.median(times),
                    hyp=hyp,
                    same_as_30s=hyp == ref[1],
                )
            )

    print(
        f"{len(utts)} espeak utterances, {min(r['seconds'] for r in rows['30 s']):.1f}-"
        f"{max(r['seconds'] for r in rows['30 s']):.1f} s; Whisper tiny.en encoder (float32, torch "
        f"{torch.__version__}, {args.threads} thread(s)); times are medians of {args.repeats} calls on a shared CPU\n"
    )
    print(
        "| window | cosine to 30 s, mean | worst utterance | worst frame | encoder ms / utt | "
        "greedy = 30 s | WER vs text |"
    )
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for label in labels:
        r = rows[label]
        summary[label] = dict(
            cos_mean=statistics.mean(x["cos_mean"] for x in r),
            cos_worst_utterance=min(x["cos_mean"] for x in r),
            cos_worst_frame=min(x["cos_min"] for x in r),
            encoder_ms=1000 * statistics.mean(x["encoder_s"] for x in r),
            same_transcript=sum(x["same_as_30s"] for x in r),
            wer=wer([x["text"] for x in r], [x["hyp"] for x in r]),
        )
        s = summary[label]
        print(
            f"| {label} | {s['cos_mean']:.4f} | {s['cos_worst_utterance']:.4f} | {s['cos_worst_frame']:.4f} | "
            f"{s['encoder_ms']:.0f} | {s['same_transcript']}/{len(r)} | {s['wer']:.3f} |"
        )
    if args.json is not None:
        write_result(args.json, "whisper_window", args, load_at_start, summary=summary, per_utterance=rows)


if __name__ == "__main__":
    main()
