"""A plain-PyTorch training loop for small experiments, tests and benchmarks.

The full recipes (Lightning, YAML, checkpoints, resume, DDP) run through :func:`flow_omni.training.train`;
this is the loop without Lightning, used where a few hundred steps on a handful of samples are enough
(the overfitting tests, quick notebooks). AdamW, linear warm-up then cosine decay
(:mod:`flow_omni.training.schedule`), gradient clipping, and a NaN/Inf guard that stops with a clear message.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from flow_omni.errors import FlowOmniError
from flow_omni.layout import Sample
from flow_omni.training.schedule import warmup_cosine


def quick_train(
    model,
    samples: Sequence[Sample],
    *,
    steps: int = 300,
    batch_size: int = 8,
    lr: float = 2e-3,
    warmup: int = 20,
    weight_decay: float = 0.0,
    clip: float = 1.0,
    seed: int = 0,
    progress: bool = False,
    callback: Callable[[int, dict], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` (a FlowOmni) on ``samples``; returns the per-step loss terms."""
    if not samples:
        raise FlowOmniError("quick_train needs at least one sample")
    torch.manual_seed(seed)
    rnd = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    lr_at = functools.partial(warmup_cosine, warmup=warmup, total=steps, min_ratio=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    history: list[dict[str, float]] = []
    order: list[int] = []
    bar = tqdm(range(steps), desc="train", disable=not progress)
    for step in bar:
        if len(order) < batch_size:
            extra = list(range(len(samples)))
            rnd.shuffle(extra)
            order += extra * max(1, math.ceil(batch_size / len(samples)))
        idx, order = order[:batch_size], order[batch_size:]
        batch = model.collate([samples[i] for i in idx])
        out = model(batch, generator=gen)
        if not torch.isfinite(out.loss):
            raise FlowOmniError(
                f"loss became {float(out.loss)} at step {step} ({out.as_dict()}); "
                "lower the learning rate or check the data"
            )
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
        terms = out.as_dict()
        history.append(terms)
        if callback is not None:
            callback(step, terms)
        if step % 10 == 0:
            bar.set_postfix({k: f"{v:.3f}" for k, v in terms.items()})
    model.eval()
    return history
