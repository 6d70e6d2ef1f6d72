"""A benchmark's ``--json`` file: its numbers with the settings, the commit and the machine.

Imported by the scripts beside it (``python benchmarks/<script>.py`` puts this folder on the path).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from flow_omni.precision import fast_bf16_matmul


def git_commit() -> str:
    """The checkout's commit, ``-dirty`` when tracked files differ from it, or ``unknown``."""
    try:
        here = Path(__file__).resolve().parent
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True).stdout
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return sha.strip() + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine(load_avg_at_start: tuple[float, float, float]) -> dict:
    """uname -m and nproc (the CPUs this process may use), the vector instructions torch uses and whether
    it multiplies bf16 matrices natively (timings differ several-fold between such CPUs), versions, and
    how busy the machine was (1/5/15-minute load averages) when the run started and now."""
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return dict(
        machine=platform.machine(),
        nproc=nproc,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        bf16_matmul_native=fast_bf16_matmul("cpu"),
        python=platform.python_version(),
        torch=torch.__version__,
        load_avg_at_start=load_avg_at_start,
        load_avg_at_end=os.getloadavg(),
    )


def write_result(
    path: Path, benchmark: str, args: argparse.Namespace, load_avg_at_start: tuple[float, float, float], **numbers
) -> None:
    """Write ``{benchmark, commit, settings (the parsed arguments), machine, **numbers}`` to ``path``."""
    result = dict(
        benchmark=benchmark,
        commit=git_commit(),
        settings={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        machine=machine(load_avg_at_start),
        **numbers,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
