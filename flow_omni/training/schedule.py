"""The learning-rate schedule every training loop here uses: linear warm-up, then a half cosine.

``transformers.get_cosine_schedule_with_warmup`` has no floor (it decays to 0); the FlowOmni recipes
decay to ``min_lr_ratio`` of the peak instead, so the factor is written here once.
"""

from __future__ import annotations

import math


def warmup_cosine(
    step: int, *, warmup: int, total: int, min_ratio: float = 0.0, warmup_from_zero: bool = False
) -> float:
    """LR factor at ``step`` (0-based): linear warm-up over ``warmup`` steps, then a half cosine from 1 down to
    ``min_ratio`` at step ``total``, held there after it.

    The warm-up factor is ``(step + 1) / warmup``, so the first step already trains; with
    ``warmup_from_zero`` it is ``step / warmup``, starting at 0 as ``transformers`` and vocos do.
    """
    if step < warmup:
        return (step if warmup_from_zero else step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac))


__all__ = ["warmup_cosine"]
