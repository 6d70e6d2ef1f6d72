"""Generation speed of FlowOmni presets on this machine (a table; not a test).

For each preset, r and speech head (the continuous flow head at each ``--steps``, and a k-means code
head on the same backbone): LLM steps per second of audio, real-time factor of generation without and
with the (streaming) Vocos vocoder, time to the first audio chunk, time per step at position ~10
vs ~1000 (the KV cache keeps it flat; without it the cost grows with the position), and batch-8 vs
batch-1 throughput. Everything is measured in one run.

Weights are untrained (speed does not depend on their values), so the state and text heads are
biased to start speaking at once and never stop: every step after the delay produces a token, and
``max_new_positions`` sets the length. The vocoder is a randomly initialised full-size Vocos
(13.5 M parameters, the charactr/vocos-mel-24khz shape).

    python benchmarks/generation.py                      # tiny + small, r = 1 2 4
    python benchmarks/generation.py --presets tiny --rs 4 --seconds 1
    python benchmarks/generation.py --presets tiny --rs 4 --tokens continuous kmeans --steps 3 10 --threads 1
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from flow_omni import FlowOmni, FlowOmniConfig, Sample  # noqa: E402
from flow_omni.layout import STATE_GEN, STATE_START  # noqa: E402
from flow_omni.models.generation import GenerationConfig, decode_steps  # noqa: E402
from flow_omni.vocoder import Vocoder  # noqa: E402


def speaking_model(preset: str, r: int, tokens: str = "continuous") -> FlowOmni:
    torch.manual_seed(0)
    extra = {} if tokens == "continuous" else {"tokens": tokens, "quantizer": {"codebook_size": 256}}
    model = FlowOmni(FlowOmniConfig.preset(preset, r=r, **extra)).eval()
    if model.speech.needs_fit:  # codebooks fitted on random tokens: the speed does not depend on them
        model.fit_speech_head(torch.randn(4096, model.config.speech.token_dim))
    with torch.no_grad():
        model.state_head.bias[STATE_START] = 100.0
        model.state_head.bias[STATE_GEN] = 100.0
        lm = model.backbone.get_output_embeddings()
        if lm.bias is None:
            lm.bias = torch.nn.Parameter(torch.zeros(lm.out_features))
        lm.bias[model.special["<eot>"]] = 100.0
    return model


def timed_steps(model, samples, cfg) -> list[float]:
    """Wall time of each decoding step (the first entry includes the prompt)."""
    times, t = [], time.perf_counter()
    for _ in decode_steps(model, samples, cfg):
        now = time.perf_counter()
        times.append(now - t)
        t = now
    return times


def first_audio_latency(model, sample, cfg, vocoder) -> tuple[float, float]:
    t0 = time.perf_counter()
    first = None
    for ev in model.stream(sample, cfg, vocoder=vocoder, chunk_tokens=max(1, math.ceil(8 / model.config.speech.r))):
        if ev.kind == "audio" and first is None:
            first = time.perf_counter() - t0
    return first or float("nan"), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--rs", nargs="+", type=int, default=[1, 2, 4])
    ap.add_argument("--seconds", type=float, default=2.0, help="audio generated per measurement")
    ap.add_argument("--long", type=int, default=1000, help="position for the 'late step' measurement")
    ap.add_argument("--steps", type=int, nargs="+", default=[10], help="flow-head Euler steps (one row each)")
    ap.add_argument(
        "--tokens", nargs="+", default=["continuous"], choices=["continuous", "kmeans"], help="speech heads to time"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    vocoder = Vocoder().eval()
    prompt = Sample("T2A", prompt_text="the quick brown fox")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, flow head: euler\n")
    rows = []
    heads = [(t, s) for t in args.tokens for s in (args.steps if t == "continuous" else [0])]
    for preset in args.presets:
        for r in args.rs:
            for tokens, nfe in heads:
                model = speaking_model(preset, r, tokens)
                rate = model.config.speech.token_rate
                n = math.ceil(args.seconds * rate) + model.config.layout.text_delay + 2
                steps_ = max(nfe, 1)  # ignored by a code head
                cfg = GenerationConfig(max_new_positions=n, steps=steps_, seed=0)
                timed_steps(model, [prompt], GenerationConfig(max_new_positions=4, steps=steps_))  # warm-up
                t = time.perf_counter()
                steps = timed_steps(model, [prompt], cfg)
                gen_s = time.perf_counter() - t
                audio_s = (len(steps) - model.config.layout.text_delay - 1) / rate
                first, total_voc = first_audio_latency(model, prompt, cfg, vocoder)
                t = time.perf_counter()
                timed_steps(model, [prompt] * 8, cfg)
                b8 = time.perf_counter() - t
                long_cfg = GenerationConfig(max_new_positions=args.long + 10, steps=steps_)
                per = timed_steps(model, [prompt], long_cfg)
                early = sorted(per[8:13])[2]
                late = sorted(per[args.long - 2 : args.long + 3])[2]
                nc_cfg = GenerationConfig(max_new_positions=310, steps=steps_, use_cache=False)
                per_nc = timed_steps(model, [prompt], nc_cfg)
                rows.append(
                    dict(
                        preset=preset,
                        r=r,
                        head=f"flow, {nfe} Euler" if tokens == "continuous" else tokens,
                        params=model.num_parameters() / 1e6,
                        rate=rate,
                        rtf=gen_s / audio_s,
                        rtf_voc=total_voc / audio_s,
                        first=first,
                        early=early * 1e3,
                        late=late * 1e3,
                        nc_early=sorted(per_nc[8:13])[2] * 1e3,
                        nc_late=sorted(per_nc[298:303])[2] * 1e3,
                        b1=len(steps) / gen_s,
                        b8=8 * len(steps) / b8,
                    )
                )
                print(f"done {preset} r={r} {tokens} {nfe or ''}", flush=True)
    print()
    print(
        "| preset | r | speech head | params (M) | LLM steps / s audio | RTF gen | RTF gen+Vocos (stream) "
        "| first audio (s) "
        f"| ms/step @10 | ms/step @{args.long} | no-cache ms/step @10 | @300 | tokens/s b=1 | tokens/s b=8 | b8/b1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for x in rows:
        print(
            f"| {x['preset']} | {x['r']} | {x['head']} | {x['params']:.1f} | {x['rate']:.1f} | {x['rtf']:.2f} "
            f"| {x['rtf_voc']:.2f} "
            f"| {x['first']:.2f} | {x['early']:.1f} | {x['late']:.1f} | {x['nc_early']:.1f} | {x['nc_late']:.1f} "
            f"| {x['b1']:.0f} | {x['b8']:.0f} | {x['b8'] / x['b1']:.1f} |"
        )
    print(
        "\nRTF = wall time / seconds of audio (< 1 is faster than real time). First audio waits for the "
        "Vocos right context (29 frames) plus one chunk."
    )


if __name__ == "__main__":
    main()
