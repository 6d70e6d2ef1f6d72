"""Benchmarks that train models and score them: the robustness benchmark (continuous vs discrete tokens).

Scoring itself lives in :mod:`flow_omni.eval`; this package runs it: it trains (through
:mod:`flow_omni.training`), keeps and reuses finished runs, times latency and writes the results.

    from flow_omni.bench import RobustnessConfig, run_robustness
    report = run_robustness(RobustnessConfig.demo("demo_out"))   # or: flow-omni bench robustness
"""

from flow_omni.bench.config import RobustnessConfig, VariantSpec, default_variants
from flow_omni.bench.robustness import run_robustness

__all__ = ["RobustnessConfig", "VariantSpec", "default_variants", "run_robustness"]
