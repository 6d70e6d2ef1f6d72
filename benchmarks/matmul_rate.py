"""Timing a call, and how fast this core multiplies float32 matrices (the yardstick for a step's products).

Imported by the scripts beside it (``python benchmarks/<script>.py`` puts this folder on the path).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_us(f: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``f()`` in microseconds, over ``repeats`` calls after one untimed call."""
    f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def peak_gflops(size: int = 1024, repeats: int = 20) -> float:
    """GFLOP/s of a ``size``³ float32 product on torch's current threads: about the most its kernel does
    here, against which a model's smaller products are read."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / median_us(lambda: a @ b, repeats) / 1e3
