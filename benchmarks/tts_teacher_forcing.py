"""TTS with a true history against TTS on the model's own: where does a model's speech go wrong?

For each ``--model`` and the first ``--items`` test sentences of a corpus, the T→A speech scored three
ways, through the same vocoder (Griffin-Lim by default) and listener (Whisper tiny.en):

- ``reference``: the sentence in the output voice, resynthesised (the ceiling this vocoder allows);
- ``tokens``: the reference as the model's speech tokens can hold it
  (:meth:`~flow_omni.models.speech_head.SpeechHead.represent`: a k-means or RVQ model's codebook
  round trip; the reference itself for a continuous model), resynthesised: the ceiling of a perfect
  predictor of those tokens;
- ``teacher-forced``: at every speech position the LLM has read the reference's tokens so far and the
  speech head samples the next one (:func:`~flow_omni.eval.teacher_forcing.teacher_forced_speech`);
- ``own-previous``: the LLM teacher-forced as above, but the speech head given its own previous
  sample as the previous token (``previous="own"``): what a ``prior="previous"`` flow head does with
  its own errors over a sentence when the LLM does not drift;
- ``free-running``: greedy ``generate``, the model reading back its own tokens (what users hear).

Speech that is understood teacher-forced and not free-running goes wrong by drift: the model was
trained only on true histories and its own tokens lead it astray. Per mode: mel L1 to the reference
(frames beyond the shorter of the two are not compared), Whisper's WER over all items, and the median
of the per-item WERs (one item whose transcript loops adds hundreds of insertions to the first).

    python benchmarks/tts_teacher_forcing.py --corpus data/learn --model runs/learn/model --items 24
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

import torch
from record import write_result  # benchmarks/record.py, beside this script

from flow_omni import FlowOmni, Sample
from flow_omni.audio.io import load_audio
from flow_omni.data.manifest import read_manifest
from flow_omni.eval.asr import WhisperASR
from flow_omni.eval.audio_metrics import mel_distance
from flow_omni.eval.robustness import token_held_reference
from flow_omni.eval.teacher_forcing import teacher_forced_speech
from flow_omni.eval.text_metrics import wer
from flow_omni.models.coarse_fine_speech import CoarseFineSpeech
from flow_omni.vocoder import load_vocoder

#: seconds of speech whose mel L1 is also reported one by one
SECONDS = 3
MODES = ("reference", "tokens", "teacher-forced", "own-previous", "free-running")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", required=True, help="save_pretrained folders")
    p.add_argument("--corpus", required=True, help="a flow-omni corpus folder (its test.jsonl)")
    p.add_argument("--items", type=int, default=24, help="test sentences")
    p.add_argument("--steps", type=int, default=10, help="flow-head Euler steps (every mode)")
    p.add_argument("--temperature", type=float, default=0.0, help="scale of the flow head's initial noise (every mode)")
    p.add_argument("--max-positions", type=int, default=300, help="free-running: generated positions at most")
    p.add_argument("--vocoder", default=None, help="mel → audio for the listener (default Griffin-Lim)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="also write the rows and every transcript here")
    p.add_argument("--modes", nargs="+", choices=MODES[1:], default=list(MODES[1:]), help="the model modes to score")
    p.add_argument(
        "--coarse-only",
        action="store_true",
        help="coarse_fine models: speak the predicted codes' centroids, without the flow head's refinement",
    )
    return p.parse_args()


def score(
    texts: list[str], heard: list[str], mels: list[torch.Tensor | None], refs: list[torch.Tensor], fps: float
) -> dict:
    """Metrics of one mode; a ``None`` mel (the model said nothing) is scored as silence. ``mel_l1_by_second``
    is the mel L1 of the first, second and third second of speech (over the items that long): how fast
    a mode's error grows along the sentence."""
    mels = [torch.full_like(r, -math.inf) if m is None else m for m, r in zip(mels, refs)]
    by_second = []
    for s in range(SECONDS):
        a, b = round(s * fps), round((s + 1) * fps)
        d = [mel_distance(m[:, a:b], r[:, a:b]) for m, r in zip(mels, refs) if min(m.shape[-1], r.shape[-1]) > a]
        by_second.append(statistics.mean(d) if d else math.nan)
    return {
        "mel_l1": statistics.mean(mel_distance(m, r) for m, r in zip(mels, refs)),
        "mel_l1_by_second": by_second,
        "whisper_wer": wer(texts, heard),
        "median_item_wer": statistics.median(wer([t], [h]) for t, h in zip(texts, heard)),
    }


def print_row(row: dict) -> None:
    print(
        f"| {row['model']} | {row['mode']} | {row['mel_l1']:.3f} | "
        + " / ".join(f"{x:.2f}" for x in row["mel_l1_by_second"])
        + f" | {row['whisper_wer']:.3f} "
        f"| {row['median_item_wer']:.3f} | {row['seconds']:.0f} |",
        flush=True,
    )


def main() -> None:
    args = parse_args()
    load = os.getloadavg()
    torch.set_num_threads(args.threads)
    test = [e for e in read_manifest(f"{args.corpus}/test.jsonl") if not e.answer_text][: args.items]
    vocoder = load_vocoder(args.vocoder).decode
    listener = WhisperASR(cpu_threads=args.threads)
    texts = [e.text for e in test]

    def listen(mels: list[torch.Tensor | None], sr: int) -> list[str]:
        return ["" if m is None else listener.transcribe(vocoder(m), sr) for m in mels]

    rows, transcripts = [], {}
    print(
        "| model | speech | mel L1 | mel L1 in seconds 1 / 2 / 3 | Whisper WER | median item WER | seconds |\n"
        "|---|---|---|---|---|---|---|"
    )
    for path in args.model:
        model = FlowOmni.from_pretrained(path)
        if args.coarse_only:
            if not isinstance(model.speech, CoarseFineSpeech):
                raise SystemExit(f"--coarse-only needs a coarse_fine model; {path} has tokens={model.config.tokens!r}")
            model.speech.refine = False
        sr = model.config.speech.mel.sample_rate
        fps = model.config.speech.mel.frame_rate
        refs = [model.speech_tokenizer.mel(load_audio(e.t2a_audio)) for e in test]
        if not rows:  # the references are the corpus's: the same for every model
            t0 = time.perf_counter()
            transcripts["reference"] = listen(refs, sr)
            rows.append(dict(model="—", mode="reference", **score(texts, transcripts["reference"], refs, refs, fps)))
            rows[-1]["seconds"] = time.perf_counter() - t0
            print_row(rows[-1])
        for mode in args.modes:
            t0 = time.perf_counter()
            if mode == "tokens":
                with torch.no_grad():
                    mels = [token_held_reference(model, r) for r in refs]
                mels = [r if m is None else m for m, r in zip(mels, refs)]  # None: the tokens hold the reference
            elif mode in ("teacher-forced", "own-previous"):
                mels = teacher_forced_speech(
                    model, texts, refs, steps=args.steps, alignments=[e.t2a_alignment for e in test],
                    previous="reference" if mode == "teacher-forced" else "own", temperature=args.temperature,
                )  # fmt: skip
            else:
                out = model.generate(
                    [Sample("T2A", prompt_text=t) for t in texts],
                    text_temperature=0.0,
                    speech_temperature=args.temperature,
                    steps=args.steps,
                    max_new_positions=args.max_positions,
                    seed=0,
                )
                mels = [g.mel if g.mel is not None and g.mel.shape[-1] else None for g in out]
            heard = listen(mels, sr)
            transcripts[f"{path} {mode}"] = heard
            rows.append(dict(model=path, mode=mode, **score(texts, heard, mels, refs, fps)))
            rows[-1]["seconds"] = time.perf_counter() - t0
            print_row(rows[-1])
    if args.json is not None:
        write_result(args.json, "tts_teacher_forcing", args, load, texts=texts, rows=rows, transcripts=transcripts)


if __name__ == "__main__":
    main()
