"""How far ahead of its speech each word's text comes, in the parallel and the aligned layout.

For the first ``--items`` T→A targets of a corpus (with the word onsets ``flow-omni corpus`` writes),
the speech token index where each word's speech begins minus the response position of the word's
first text id: how many positions the text comes early (both layouts add ``text_delay + 1`` to that).
The parallel layout writes the text from the first position on, one id a position; the aligned
layout puts each word at its onset, or right after the word before when that one runs late.
Prints percentiles and the speech rate in text ids per second against the LLM's positions per
second. No model is trained: the ids come from the tiny preset's text tokenizer (characters).

    python benchmarks/text_lead.py --corpus data/learn --items 300
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

from flow_omni import FlowOmni, FlowOmniConfig, Sample
from flow_omni.audio.io import load_audio
from flow_omni.data.manifest import read_manifest
from flow_omni.layout import aligned_positions


def percentiles(values: list[float]) -> str:
    deciles = statistics.quantiles(values, n=10)
    return (
        f"min {min(values):.1f}, p10 {deciles[0]:.1f}, median {statistics.median(values):.1f}, "
        f"p90 {deciles[-1]:.1f}, max {max(values):.1f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, help="a flow-omni corpus folder (its test.jsonl)")
    p.add_argument("--items", type=int, default=300)
    args = p.parse_args()
    cfg = FlowOmniConfig.preset("tiny", r=4)
    model = FlowOmni(dataclasses.replace(cfg, layout=dataclasses.replace(cfg.layout, kind="aligned")))
    entries = [e for e in read_manifest(f"{args.corpus}/test.jsonl") if e.t2a_alignment][: args.items]
    rate = model.speech_tokenizer.config.token_rate
    parallel, aligned, ids_per_second = [], [], []
    for e in entries:
        speech = model.encode_speech(load_audio(e.t2a_audio))
        sample = Sample(
            "T2A", prompt_text=e.text, target_text=e.text, target_speech=speech, target_alignment=e.t2a_alignment
        )
        ids, onsets = model.aligned_target(sample)
        for (index, token), at in zip(onsets, aligned_positions(onsets, len(ids))):
            parallel.append(token - index)  # the parallel layout writes id i at position i
            aligned.append(token - at)
        ids_per_second.append(len(ids) / (speech.shape[0] / rate))
    print(f"{len(entries)} sentences, {len(parallel)} words of {args.corpus}/test.jsonl")
    speed = statistics.mean(ids_per_second)
    print(f"text ids per second of speech: mean {speed:.1f}; LLM positions a second {rate:.1f}")
    print("positions by which a word's first text id comes before the token its speech begins in (+ text_delay + 1):")
    print(f"  parallel: {percentiles(parallel)}")
    late = sum(x <= -3 for x in aligned) / len(aligned)
    print(f"  aligned:  {percentiles(aligned)}; 3 or more positions late (text at or after its speech): {late:.3f}")


if __name__ == "__main__":
    main()
