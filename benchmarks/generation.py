"""Generation speed of FlowOmni presets on this machine (a table; not a test).

For each preset, r and speech head (the continuous flow head at each ``--steps``; a k-means code head
and a residual VQ head with Mini-Omni's per-level delay on the same backbone, as the robustness grid's
``kmeans`` and ``rvq4`` variants): LLM steps per second of audio, real-time factor of generation
without and with the streaming Vocos vocoder (the default doubling chunk schedule, and chunks held at
8 frames as a comparison), time to the first audio chunk, time per step at position ~10 vs ~1000
(the KV cache keeps it flat; ``--no-cache-rows`` adds steps without it, whose cost grows with the
position), batch-8 (prompts of 1 to 19 words) vs batch-1 throughput, the flow-head step over the
code-head step, where a step's time goes (the LLM, the post-net, the speech head, the rest of the
loop; timed in a run of its own), and the time of one pass over as many float32 weights as the model
has (the memory floor of a batch-1 step). Everything is measured in one run; the models take turns
over ``--rounds`` rounds and medians are reported, so
that load from other jobs falls on every head alike.

Weights are untrained (speed does not depend on their values), so the state and text heads are
biased to start speaking at once and never stop: every step after the delay produces a token, and
``max_new_positions`` sets the length. The vocoder is a randomly initialised full-size Vocos
(13.5 M parameters, the charactr/vocos-mel-24khz shape).

    python benchmarks/generation.py                      # tiny + small, r = 1 2 4
    python benchmarks/generation.py --presets tiny --rs 4 --seconds 1
    python benchmarks/generation.py --presets tiny --rs 4 --tokens continuous kmeans --steps 3 10 --threads 1 \\
        --json benchmarks/results/generation_heads.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from matmul_rate import median_us, peak_gflops  # noqa: E402  (benchmarks/matmul_rate.py, beside this script)
from record import write_result  # noqa: E402  (benchmarks/record.py, beside this script)

from flow_omni import FlowOmni, FlowOmniConfig, Sample  # noqa: E402
from flow_omni.bench.config import default_variants  # noqa: E402
from flow_omni.layout import STATE_GEN, STATE_START  # noqa: E402
from flow_omni.models.generation import AUDIO_CHUNK_FRAMES, KV_CACHES, GenerationConfig, decode_steps  # noqa: E402
from flow_omni.vocoder import Vocoder  # noqa: E402

#: The code heads this script can time, configured as the robustness grid's variants that speak
#: through them (one k-means codebook; 4 residual levels with a delay per level).
CODE_HEADS = {v.tokens: v.model_overrides() for v in default_variants() if v.tokens != "continuous"}


def speaking_model(preset: str, r: int, tokens: str = "continuous") -> FlowOmni:
    torch.manual_seed(0)
    extra = CODE_HEADS.get(tokens, {})
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


#: The parts of a decoding step timed separately: the backbone LLM, the post-net that turns
#: its hidden state into the speech head's condition, and the speech head's sampling of the next token.
PARTS = {"llm": ("backbone.base_model", "forward"), "postnet": ("", "condition"), "head": ("speech", "sample")}


def split_step(model, samples, cfg) -> dict[str, float]:
    """Milliseconds per step spent in each of :data:`PARTS`, in the rest of the loop (the text and state
    heads, the input embedding, the bookkeeping) and in all (``step``), medians over positions 5-30 of one
    run. The parts are wrapped with timers for this run only (a few microseconds per call, so the main
    table is timed without them); ``step`` is this run's own, so the parts add up to it."""
    spent: dict[str, list[float]] = {name: [0.0] for name in PARTS}
    wrapped = []  # (object, method name, what its instance dict held before)
    try:
        for name, (path, method) in PARTS.items():
            owner = model
            for attr in filter(None, path.split(".")):
                owner = getattr(owner, attr)
            inner = getattr(owner, method)

            def timed(*a, _inner=inner, _name=name, **k):
                t = time.perf_counter()
                out = _inner(*a, **k)
                spent[_name][-1] += time.perf_counter() - t
                return out

            wrapped.append((owner, method, owner.__dict__.get(method)))
            setattr(owner, method, timed)  # an instance attribute: shadows the class's method
        totals, t = [], time.perf_counter()
        for _ in decode_steps(model, samples, cfg):
            now = time.perf_counter()
            totals.append(now - t)
            t = now
            for name in PARTS:
                spent[name].append(0.0)
    finally:
        for owner, method, before in reversed(wrapped):
            if before is None:
                delattr(owner, method)
            else:  # a hook had set its own forward on the instance: put it back
                setattr(owner, method, before)
    parts = {name: statistics.median(v[5:30]) * 1e3 for name, v in spent.items()}
    parts["step"] = statistics.median(totals[5:30]) * 1e3
    parts["rest"] = parts["step"] - sum(parts[name] for name in PARTS)
    return parts


def first_audio_latency(model, sample, cfg, vocoder, audio_chunk_frames) -> tuple[float, float]:
    """Seconds to the first audio chunk and to the end of a streamed generation with the vocoder."""
    t0 = time.perf_counter()
    first = None
    for ev in model.stream(sample, cfg, vocoder=vocoder, audio_chunk_frames=audio_chunk_frames):
        if ev.kind == "audio" and first is None:
            first = time.perf_counter() - t0
    return first or float("nan"), time.perf_counter() - t0


def product_rates(hidden: int, intermediate: int, rows=(1, 8), repeats: int = 200) -> dict:
    """Microseconds and GFLOP/s of the backbone's MLP products (``hidden`` → ``intermediate`` and back) at
    each number of ``rows`` (a batch of that many sequences at one decoding step), and the GFLOP/s of a
    1024³ product (:func:`matmul_rate.peak_gflops`): where the batch-8 step's products stand between
    per-call overhead and arithmetic."""
    out = {}
    with torch.no_grad():
        for i, o in ((hidden, intermediate), (intermediate, hidden)):
            lin = torch.nn.Linear(i, o)
            for m in rows:
                x = torch.randn(m, i)
                us = median_us(lambda: lin(x), repeats)
                out[f"{i}x{o} rows={m}"] = {"us": us, "gflops": 2 * m * i * o / us / 1e3}
    out["peak_gflops"] = peak_gflops()
    return out


def weights_pass_ms(n_params: int, repeats: int = 20) -> float:
    """Median time of one matrix-vector product over ``n_params`` float32 weights: the memory floor
    of a batch-1 step that reads every weight once."""
    cols = 1024
    m = torch.randn(-(-n_params // cols), cols)
    v = torch.randn(cols)
    return median_us(lambda: torch.mv(m, v), repeats) / 1e3


#: The batch of eight prompts, of different lengths (1 to 19 words): rows that start at different
#: positions, as a server's requests do, so the batch pays for its padding and attention masks.
BATCH = tuple(
    Sample("T2A", prompt_text=x)
    for x in (
        "the quick brown fox",
        "hello there",
        "she sells sea shells by the sea shore",
        "seven",
        "a long sentence with many words in it that takes the model a while to read before it speaks",
        "what number comes before nine",
        "anna ran calmly last week",
        "the weather will be cold and windy tomorrow morning",
    )
)


def measure(model, prompt, cfg, vocoder, args) -> dict:
    """One round of every measurement of one model (the caller alternates models between rounds, so
    that load from other jobs falls on all of them alike)."""
    rate = model.config.speech.token_rate
    delay = model.config.layout.text_delay
    t = time.perf_counter()
    steps = timed_steps(model, [prompt], cfg)
    gen_s = time.perf_counter() - t
    audio_s = (len(steps) - delay - 1) / rate
    first, total_voc = first_audio_latency(model, prompt, cfg, vocoder, args.audio_chunk_frames)
    _, total_fixed = first_audio_latency(model, prompt, cfg, vocoder, 8)
    t = time.perf_counter()
    steps8 = timed_steps(model, list(BATCH), cfg)
    b8 = time.perf_counter() - t
    split = split_step(model, [prompt], cfg)
    split8 = split_step(model, list(BATCH), cfg)
    return dict(
        **{f"split_{k}": v for k, v in split.items()},
        **{f"split8_{k}": v for k, v in split8.items()},
        prefill1=steps[0] * 1e3,  # the first step reads the prompt: one short prompt against eight padded ones
        prefill8=steps8[0] * 1e3,
        step=statistics.median(steps[5:30]) * 1e3,  # positions 5-30: past the prompt, before any growth
        rtf=gen_s / audio_s,
        rtf_voc=total_voc / audio_s,
        rtf_voc8=total_fixed / audio_s,
        first=first,
        b1=len(steps) / gen_s,
        b8=len(BATCH) * len(steps8) / b8,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--rs", nargs="+", type=int, default=[1, 2, 4])
    ap.add_argument("--seconds", type=float, default=2.0, help="audio generated per measurement")
    ap.add_argument("--long", type=int, default=1000, help="position for the 'late step' measurement")
    ap.add_argument("--steps", type=int, nargs="+", default=[10], help="flow-head Euler steps (one row each)")
    ap.add_argument(
        "--tokens", nargs="+", default=["continuous"], choices=["continuous", *CODE_HEADS], help="speech heads to time"
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all heads; medians are reported")
    ap.add_argument(
        "--audio-chunk-frames", type=int, default=AUDIO_CHUNK_FRAMES, help="streaming vocoder chunk cap (frames)"
    )
    ap.add_argument(
        "--kv-caches",
        nargs="+",
        default=["growing"],
        choices=sorted(KV_CACHES),
        help="caches of the long runs (@10 / @N); the first fills the main table, each gets a line below it",
    )
    ap.add_argument("--no-cache-rows", action="store_true", help="also time steps without the KV cache")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also time each flow-head row with its trajectory compiled (GenerationConfig.compile)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--json", type=Path, default=None, help="also write settings, commit, machine and rows here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # A compiled row that ran eager after torch.compile's recompile limit would be timed under a false name.
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    load_at_start = os.getloadavg()
    vocoder = Vocoder().eval()
    prompt = Sample("T2A", prompt_text="the quick brown fox")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, flow head: euler, load average "
        f"{load_at_start[0]:.2f} on {os.cpu_count()} cores\n"
    )
    rows = []
    # (tokens, flow steps, compiled); a code head has neither steps nor anything to compile.
    compiled = [False, True] if args.compile else [False]
    heads = [
        (t, s, c)
        for t in args.tokens
        for s, c in (itertools.product(args.steps, compiled) if t == "continuous" else [(0, False)])
    ]
    for preset in args.presets:
        for r in args.rs:
            models, cfgs, rounds = {}, {}, {}
            for tokens, nfe, comp in heads:
                model = speaking_model(preset, r, tokens)
                n = math.ceil(args.seconds * model.config.speech.token_rate) + model.config.layout.text_delay + 2
                steps_ = max(nfe, 1)  # ignored by a code head
                key = tokens, nfe, comp
                cfgs[key] = GenerationConfig(
                    max_new_positions=n, steps=steps_, seed=0, kv_cache=args.kv_caches[0], compile=comp
                )
                # Warm-up, at batch 1 and 8: a compiled trajectory compiles for each (seconds, untimed).
                for batch in ([prompt], list(BATCH)):
                    timed_steps(model, batch, dataclasses.replace(cfgs[key], max_new_positions=8))
                models[key], rounds[key] = model, []
            for _ in range(args.rounds):
                for key in heads:
                    rounds[key].append(measure(models[key], prompt, cfgs[key], vocoder, args))
            # Long runs, the heads taking turns as above: one run's early and late steps share its conditions.
            # The caches swap order every round, so that neither always runs first.
            long_runs = {(key, cache): [] for key in heads for cache in args.kv_caches}
            for i in range(args.rounds):
                caches = args.kv_caches if i % 2 == 0 else args.kv_caches[::-1]
                for key, cache in ((key, c) for key in heads for c in caches):
                    cfg = dataclasses.replace(cfgs[key], max_new_positions=args.long + 30, kv_cache=cache)
                    per = timed_steps(models[key], [prompt], cfg)
                    early, late = statistics.median(per[5:30]), statistics.median(per[args.long - 10 : args.long + 10])
                    long_runs[key, cache].append((early * 1e3, late * 1e3, late / early))
            for key in heads:
                tokens, nfe, comp = key
                model, steps_ = models[key], max(nfe, 1)
                row = {k: statistics.median(m[k] for m in rounds[key]) for k in rounds[key][0]}
                by_cache = {c: [statistics.median(x) for x in zip(*long_runs[key, c])] for c in args.kv_caches}
                early, late, ratio = by_cache[args.kv_caches[0]]
                row.update(
                    preset=preset,
                    r=r,
                    head=(f"flow, {nfe} Euler" + (", compiled" if comp else "")) if tokens == "continuous" else tokens,
                    params=model.num_parameters() / 1e6,
                    rate=model.config.speech.token_rate,
                    early=early,
                    late=late,
                    late_ratio=ratio,
                    late_ratios=[x[2] for x in long_runs[key, args.kv_caches[0]]],
                    long_by_cache=by_cache,
                    long_runs_by_cache={c: long_runs[key, c] for c in args.kv_caches},
                    floor=weights_pass_ms(model.num_parameters()),
                )
                if not rows or rows[-1]["preset"] != preset:  # once per preset: the products are the backbone's
                    bb = model.backbone.config
                    row["products"] = product_rates(bb.hidden_size, bb.intermediate_size)
                if args.no_cache_rows:
                    per_nc = timed_steps(
                        model, [prompt], dataclasses.replace(cfgs[key], max_new_positions=310, use_cache=False)
                    )
                    row.update(
                        nc_early=statistics.median(per_nc[5:15]) * 1e3, nc_late=statistics.median(per_nc[295:305]) * 1e3
                    )
                rows.append(row)
                print(f"done {preset} r={r} {row['head']}", flush=True)
    print()
    print_tables(rows, args)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    if args.json is not None:
        write_result(args.json, "generation.py (speech heads side by side)", args, load_at_start, rows=rows)


def print_tables(rows: list[dict], args) -> None:
    nc = "| no-cache ms/step @10 | @300 " if args.no_cache_rows else ""
    print(
        "| preset | r | speech head | params (M) | LLM steps / s audio | ms/step | RTF gen "
        f"| RTF gen+Vocos (stream, cap {args.audio_chunk_frames}) | RTF gen+Vocos (8-frame chunks) | first audio (s) "
        f"| ms/step @10 | ms/step @{args.long} | @{args.long} / @10 {nc}| tokens/s b=1 | tokens/s b=8 | b8/b1 "
        "| weights pass (ms) |"
    )
    print("|---" * (17 + 2 * args.no_cache_rows) + "|")
    for x in rows:
        ncv = f"| {x['nc_early']:.1f} | {x['nc_late']:.1f} " if args.no_cache_rows else ""
        print(
            f"| {x['preset']} | {x['r']} | {x['head']} | {x['params']:.1f} | {x['rate']:.1f} | {x['step']:.2f} "
            f"| {x['rtf']:.2f} | {x['rtf_voc']:.2f} | {x['rtf_voc8']:.2f} | {x['first']:.3f} | {x['early']:.2f} "
            f"| {x['late']:.2f} | {x['late_ratio']:.2f} {ncv}| {x['b1']:.0f} | {x['b8']:.0f} "
            f"| {x['b8'] / x['b1']:.1f} | {x['floor']:.2f} |"
        )
    # The issue's first target: a flow-head step over a code-head step on the same backbone (k-means
    # where it was timed, the discrete head the target was set against).
    codes = {}
    for x in rows:
        key = x["preset"], x["r"]
        if not x["head"].startswith("flow") and (key not in codes or x["head"] == "kmeans"):
            codes[key] = x
    for x in rows:
        ref = codes.get((x["preset"], x["r"]))
        if ref is not None and x is not ref:
            print(
                f"\n{x['preset']} r={x['r']} {x['head']} / {ref['head']}: step {x['step'] / ref['step']:.2f}x "
                f"(positions 5-30, medians of {args.rounds} rounds), tokens/s b=1 {ref['b1'] / x['b1']:.2f}x slower"
            )
    print(
        f"\nWhere a step's time goes (ms, medians over positions 5-30 and {args.rounds} rounds, in runs of their "
        "own; the rest is the text and state heads, the input embedding and the loop's bookkeeping):\n"
    )
    print("| preset | r | speech head | LLM | post-net | speech head | rest of the loop | step |")
    print("|---|---|---|---|---|---|---|---|")
    for x in rows:
        cells = " | ".join(f"{x[f'split_{k}']:.2f}" for k in (*PARTS, "rest", "step"))
        print(f"| {x['preset']} | {x['r']} | {x['head']} | {cells} |")
    print(
        "\nThe same at batch 8 (the eight prompts of different lengths; ms per step of the batch, and its "
        "ratio to the batch-1 step), and the first step, which reads the prompt (ms, batch 1 / batch 8):\n"
    )
    print(
        "| preset | r | speech head | LLM | post-net | speech head | rest of the loop | step | first step b=1 / b=8 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for x in rows:
        keys = (*PARTS, "rest", "step")
        cells = " | ".join(f"{x[f'split8_{k}']:.2f} ({x[f'split8_{k}'] / x[f'split_{k}']:.1f}×)" for k in keys)
        print(f"| {x['preset']} | {x['r']} | {x['head']} | {cells} | {x['prefill1']:.0f} / {x['prefill8']:.0f} |")
    for x in rows:
        if "products" in x:
            rates = x["products"]
            cells = ", ".join(
                f"{k}: {v['us']:.0f} µs, {v['gflops']:.1f} GFLOP/s" for k, v in rates.items() if k != "peak_gflops"
            )
            print(
                f"\n{x['preset']} MLP products (one call each, median): {cells}; a 1024³ product "
                f"runs at {rates['peak_gflops']:.1f} GFLOP/s"
            )
    if len(args.kv_caches) > 1:
        print(f"\nms/step @10 → @{args.long} (ratio) by KV cache, medians of {args.rounds} long runs taking turns:")
        for x in rows:
            cells = ", ".join(f"{c} {e:.2f} → {late:.2f} ({q:.2f})" for c, (e, late, q) in x["long_by_cache"].items())
            print(f"{x['preset']} r={x['r']} {x['head']}: {cells}")
    print(
        "\nRTF = wall time / seconds of audio (< 1 is faster than real time). ms/step: median over positions "
        "5-30 of the rounds' runs; @10 and @N: medians over positions 5-30 and N-10..N+10 of a long run, "
        "and their ratio, each the median over one long run per round. "
        "First audio waits for the Vocos right context (29 frames) plus the first token that completes it. "
        "Weights pass: one float32 matrix-vector product over as many weights as the model has."
    )


if __name__ == "__main__":
    main()
