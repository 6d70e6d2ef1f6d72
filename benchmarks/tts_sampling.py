"""TTS quality of a trained model against the flow head's sampling settings (Euler steps, temperature).

Greedy text, T→A on the first test sentences of a corpus; prints a Markdown table of the log-mel L1
to the output-voice reference and the generated/reference length ratios.

    python benchmarks/tts_sampling.py --model runs/learning/continuous/run/model --corpus data/learn
"""

from __future__ import annotations

import argparse
import time

import torch

from flow_omni import FlowOmni, Sample
from flow_omni.audio.io import load_audio
from flow_omni.data.manifest import read_manifest
from flow_omni.eval.audio_metrics import mel_distance

SETTINGS = [(3, 0.0), (10, 0.0), (32, 0.0), (10, 0.5), (10, 1.0)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a save_pretrained folder")
    p.add_argument("--corpus", required=True, help="a flow-omni corpus folder")
    p.add_argument("--items", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = FlowOmni.from_pretrained(args.model)
    test = [e for e in read_manifest(f"{args.corpus}/test.jsonl") if not e.answer_text][: args.items]
    refs = [model.speech_tokenizer.mel(load_audio(e.t2a_audio)) for e in test]
    print("| Euler steps | temperature | mel L1 | length ratio (min–max) | seconds |\n|---|---|---|---|---|")
    for steps, temp in SETTINGS:
        t0 = time.perf_counter()
        out = model.generate(
            [Sample("T2A", prompt_text=e.text) for e in test],
            speech_temperature=temp,
            steps=steps,
            max_new_positions=300,
            seed=0,
        )
        dist = [mel_distance(g.mel, r) for g, r in zip(out, refs) if g.mel is not None]
        ratios = [g.mel.shape[-1] / r.shape[-1] for g, r in zip(out, refs) if g.mel is not None]
        l1 = sum(dist) / len(dist) if dist else float("nan")
        span = f"{min(ratios):.2f}–{max(ratios):.2f}" if ratios else "silent"
        print(f"| {steps} | {temp} | {l1:.3f} | {span} | {time.perf_counter() - t0:.1f} |")


if __name__ == "__main__":
    main()
