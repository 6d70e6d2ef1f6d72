"""The one warm-up + cosine LR schedule reproduces, value for value, the three it replaced."""

import math

from flow_omni.training.schedule import warmup_cosine


def _lightning_module(step, warm, total, floor):  # training/module.py before
    if step < warm:
        return (step + 1) / warm
    frac = min(1.0, (step - warm) / max(1, total - warm))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))


def _quick_train(step, warmup, steps):  # training/quicktrain.py before (its steps never pass `steps`)
    if step < warmup:
        return (step + 1) / warmup
    progress_frac = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_frac))


def _vocos(step, warmup, total):  # training/vocoder.py before (its steps never pass `total`)
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def test_warmup_cosine_equals_the_schedules_it_replaced():
    for total in (1, 2, 7, 50, 1000):
        for warm in (0, 1, 3, 20, 100):
            for step in range(total + 1):
                for floor in (0.0, 0.1, 0.5, 1.0):
                    assert warmup_cosine(step, warmup=warm, total=total, min_ratio=floor) == _lightning_module(
                        step, warm, total, floor
                    )
                assert warmup_cosine(step, warmup=warm, total=total, min_ratio=0.1) == _quick_train(step, warm, total)
                assert warmup_cosine(step, warmup=warm, total=total, warmup_from_zero=True) == _vocos(step, warm, total)
            # past the end the factor stays at the floor
            assert warmup_cosine(total + 5, warmup=0, total=total, min_ratio=0.1) == _lightning_module(
                total, 0, total, 0.1
            )
