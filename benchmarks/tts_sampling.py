"""TTS quality of a trained model against the flow head's sampling settings (Euler steps, temperature).

Greedy text, T→A on the first test sentences of a corpus; prints a Markdown table of the log-mel L1
to the output-voice reference and the generated/reference length ratios.

    python benchmarks/tts_sampling.py --model runs/learning/continuous/run/model --corpus data/learn

``--nfe`` instead measures the quality-cost curve of issue 12: greedy speech (temperature 0, as the
evaluation report samples) for each solver in ``--solvers`` at each number of network evaluations
per token (NFE; midpoint and Heun take two per step, so they skip odd NFE), with the mel L1 and the
model's own-ASR CER of what it said (a conv encoder reads the generated tokens, a Whisper encoder
hears them through ``--vocoder``, Griffin-Lim by default, as in the evaluation report).

    python benchmarks/tts_sampling.py --model M --corpus C --nfe 1 2 3 4 6 10 32 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from flow_omni import FlowOmni, Sample
from flow_omni.audio.io import load_audio
from flow_omni.data.manifest import read_manifest
from flow_omni.eval.audio_metrics import mel_distance
from flow_omni.eval.text_metrics import cer
from flow_omni.models.ode import SOLVERS
from flow_omni.vocoder import load_vocoder

SETTINGS = [(3, 0.0), (10, 0.0), (32, 0.0), (10, 0.5), (10, 1.0)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a save_pretrained folder")
    p.add_argument("--corpus", required=True, help="a flow-omni corpus folder")
    p.add_argument("--items", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--nfe", type=int, nargs="+", default=None, help="measure these NFE per solver instead")
    p.add_argument("--solvers", nargs="+", default=["euler", "midpoint", "heun"])
    p.add_argument("--vocoder", default=None, help="for the own-ASR CER of a Whisper-encoder model (Griffin-Lim)")
    p.add_argument("--max-positions", type=int, default=300)
    p.add_argument("--json", type=Path, default=None, help="also write the --nfe rows here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = FlowOmni.from_pretrained(args.model)
    test = [e for e in read_manifest(f"{args.corpus}/test.jsonl") if not e.answer_text][: args.items]
    refs = [model.speech_tokenizer.mel(load_audio(e.t2a_audio)) for e in test]
    if args.nfe:
        nfe_curve(model, test, refs, args)
        return
    print("| Euler steps | temperature | mel L1 | length ratio (min–max) | seconds |\n|---|---|---|---|---|")
    for steps, temp in SETTINGS:
        t0 = time.perf_counter()
        out = model.generate(
            [Sample("T2A", prompt_text=e.text) for e in test],
            speech_temperature=temp,
            steps=steps,
            max_new_positions=args.max_positions,
            seed=0,
        )
        dist = [mel_distance(g.mel, r) for g, r in zip(out, refs) if g.mel is not None]
        ratios = [g.mel.shape[-1] / r.shape[-1] for g, r in zip(out, refs) if g.mel is not None]
        l1 = sum(dist) / len(dist) if dist else float("nan")
        span = f"{min(ratios):.2f}–{max(ratios):.2f}" if ratios else "silent"
        print(f"| {steps} | {temp} | {l1:.3f} | {span} | {time.perf_counter() - t0:.1f} |")


def nfe_curve(model: FlowOmni, test, refs, args) -> None:
    vocoder = load_vocoder(args.vocoder)
    sr = model.config.speech.mel.sample_rate
    rows = []
    print("| solver | NFE | steps | mel L1 | own-ASR CER | spoke | length ratio (min–max) | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for solver in args.solvers:
        per_step = SOLVERS[solver]
        for nfe in args.nfe:
            if nfe % per_step:
                continue
            t0 = time.perf_counter()
            out = model.generate(
                [Sample("T2A", prompt_text=e.text) for e in test],
                text_temperature=0.0,
                speech_temperature=0.0,
                solver=solver,
                steps=nfe // per_step,
                max_new_positions=args.max_positions,
                seed=0,
            )
            spoken = [(e, g, r) for e, g, r in zip(test, out, refs) if g.mel is not None and g.mel.shape[-1]]
            # Silence counts as silence against the reference, as in the evaluation report.
            dist = [mel_distance(g.mel, r) if g.mel is not None else None for g, r in zip(out, refs)]
            dist = [
                d if d is not None else mel_distance(torch.full_like(r, -float("inf")), r) for d, r in zip(dist, refs)
            ]
            heard = [
                Sample(
                    "A2T",
                    prompt_audio=g.speech_tokens
                    if model.config.encoder.kind == "conv"
                    else model.prepare_audio(_within(vocoder.decode(g.mel), model.encoder.max_seconds, sr)),
                )
                for _, g, _ in spoken
            ]
            hyps = (
                [h.text for h in model.generate(heard, max_new_positions=args.max_positions, seed=0)] if heard else []
            )
            row = dict(
                solver=solver,
                nfe=nfe,
                steps=nfe // per_step,
                mel_l1=sum(dist) / len(dist),
                self_asr_cer=cer([e.text for e, _, _ in spoken], hyps) if spoken else float("nan"),
                spoke=len(spoken) / len(test),
                length_ratios=[g.mel.shape[-1] / r.shape[-1] for _, g, r in spoken],
                seconds=time.perf_counter() - t0,
            )
            rows.append(row)
            ratios = row["length_ratios"]
            span = f"{min(ratios):.2f}–{max(ratios):.2f}" if ratios else "silent"
            print(
                f"| {solver} | {nfe} | {row['steps']} | {row['mel_l1']:.3f} | {row['self_asr_cer']:.3f} "
                f"| {row['spoke']:.2f} | {span} | {row['seconds']:.1f} |",
                flush=True,
            )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps(dict(settings=settings, items=len(test), rows=rows), indent=1))


def _within(audio: torch.Tensor, seconds: float | None, sr: int) -> torch.Tensor:
    """The first ``seconds`` of ``audio`` (a runaway output must still fit the encoder's window)."""
    return audio if seconds is None else audio[: int(seconds * sr)]


if __name__ == "__main__":
    main()
