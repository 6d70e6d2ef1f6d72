"""TTS quality of a trained model against the flow head's sampling settings (Euler steps, temperature).

Greedy text, T→A on the first test sentences of a corpus; prints a Markdown table of the log-mel L1
to the output-voice reference and the generated/reference length ratios.

    python benchmarks/tts_sampling.py --model runs/learning/continuous/run/model --corpus data/learn

``--nfe`` instead measures the quality-cost curve of issue 12: greedy speech (temperature 0, as the
evaluation report samples) for each solver in ``--solvers`` at each number of network evaluations
per token (NFE; midpoint and Heun take two per step, so they skip odd NFE) and each classifier-free
guidance scale in ``--cfg-scales`` (a model trained with ``flow.cfg_dropout`` > 0) and speech
temperature in ``--speech-temperatures`` (the softmax of a code head, the noise of the flow head), scored as the
evaluation report scores T→A (:func:`~flow_omni.eval.robustness.evaluate_model`): the mel L1, the
model's own-ASR CER of what it said, and Whisper tiny.en's WER of it through ``--vocoder``
(Griffin-Lim by default) next to the same for the resynthesised references.

    python benchmarks/tts_sampling.py --model M --corpus C --nfe 1 2 3 4 6 10 32 --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

import torch
from record import write_result  # benchmarks/record.py, beside this script

from flow_omni import FlowOmni, Sample
from flow_omni.audio.io import load_audio
from flow_omni.data.manifest import read_manifest
from flow_omni.eval.asr import WhisperASR
from flow_omni.eval.audio_metrics import mel_distance
from flow_omni.eval.robustness import evaluate_model
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
    p.add_argument("--vocoder", default=None, help="--nfe: mel → audio for the listeners (default Griffin-Lim)")
    p.add_argument("--max-positions", type=int, default=300)
    p.add_argument("--cfg-scales", type=float, nargs="+", default=[1.0], help="--nfe: classifier-free guidance scales")
    p.add_argument(
        "--speech-temperatures",
        type=float,
        nargs="+",
        default=[0.0],
        help="--nfe: speech temperatures (a code head's softmax, the flow head's noise; 0 = greedy, as scored)",
    )
    p.add_argument("--no-whisper", dest="whisper", action="store_false", help="--nfe: skip Whisper's WER")
    p.add_argument("--json", type=Path, default=None, help="also write the --nfe rows here")
    args = p.parse_args()
    load_at_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    model = FlowOmni.from_pretrained(args.model)
    test = [e for e in read_manifest(f"{args.corpus}/test.jsonl") if not e.answer_text][: args.items]
    if args.nfe:
        nfe_curve(model, test, args, load_at_start)
        return
    refs = [model.speech_tokenizer.mel(load_audio(e.t2a_audio)) for e in test]
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


def nfe_curve(model: FlowOmni, test, args, load_at_start: tuple[float, float, float]) -> None:
    """Score T→A (as the evaluation report does) at each solver × NFE × CFG scale × speech temperature."""
    vocoder = load_vocoder(args.vocoder).decode
    listener = WhisperASR() if args.whisper else None
    ceiling: dict[str, str] = {}  # the resynthesised references, transcribed once
    rows = []
    print(
        "| solver | NFE | steps | CFG scale | speech temperature | mel L1 | own-ASR CER | Whisper WER | spoke "
        "| seconds (with scoring) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for solver in args.solvers:
        per_step = SOLVERS[solver]
        for nfe in args.nfe:
            if nfe % per_step:
                continue
            for scale, temp in itertools.product(args.cfg_scales, args.speech_temperatures):
                t0 = time.perf_counter()
                generation = {
                    "solver": solver,
                    "steps": nfe // per_step,
                    "cfg_scale": scale,
                    "speech_temperature": temp,
                }
                scores = evaluate_model(
                    model,
                    test,
                    [],
                    ["clean"],
                    tasks=("tts",),
                    max_new_positions=args.max_positions,
                    vocoder=vocoder,
                    external_asr=listener,
                    ceiling_cache=ceiling,
                    generation=generation,
                )
                row = dict(solver=solver, nfe=nfe, steps=nfe // per_step, cfg_scale=scale, speech_temperature=temp)
                row.update({r["metric"]: r["value"] for r in scores})
                row["seconds_with_scoring"] = time.perf_counter() - t0
                rows.append(row)
                print(
                    f"| {solver} | {nfe} | {row['steps']} | {scale} | {temp:g} | {row['mel_l1']:.3f} "
                    f"| {row.get('self_asr_cer', float('nan')):.3f} | {row.get('whisper_wer', float('nan')):.3f} "
                    f"| {row['spoke']:.2f} | {row['seconds_with_scoring']:.1f} |",
                    flush=True,
                )
    if rows and "whisper_wer_ceiling" in rows[0]:
        ceiling_wer = rows[0]["whisper_wer_ceiling"]
        print(f"\nWhisper WER of the references resynthesised by the same vocoder: {ceiling_wer:.3f}")
    if args.json is not None:
        write_result(args.json, "tts_sampling", args, load_at_start, items=len(test), rows=rows)


if __name__ == "__main__":
    main()
