"""``precision: auto``: bf16-mixed autocast where this machine multiplies bf16 matrices natively,
float32 where it does not.

bf16 autocast halves a step of the learn recipe on a CPU with AVX-512 bf16, and makes it about ten
times slower on one with AVX2 alone, where torch multiplies bf16 matrices in a generic loop
(README, "Training precision on CPUs without bf16"). A recipe that names one precision is fast on
one kind of machine only, so the CPU recipes say ``auto`` and a run resolves it when it starts; the
run's ``config.yaml`` then records what it trained in. A run that names ``bf16-mixed`` on such a CPU
trains in bf16 arithmetic at float32 speed (:mod:`flow_omni.emulated_bf16`).
"""

from __future__ import annotations

import contextlib
import functools

import torch

from flow_omni.emulated_bf16 import emulated_bf16_matmuls

AUTO = "auto"
BF16_MIXED = "bf16-mixed"
FLOAT32 = "32-true"


@functools.cache
def fast_bf16_matmul(device_type: str = "cpu") -> bool:
    """Whether bf16 matrix products run on native kernels on ``device_type`` (``"cpu"`` or ``"cuda"``).

    On a CPU this is torch's own test for sending them to oneDNN (on x86, AVX-512 with BW, VL and DQ,
    which AVX-512 bf16 and AMX machines have); where it fails, torch falls back to a generic loop. On
    CUDA, bf16 support without emulation (Ampere and newer). Other devices (MPS) are not asked: False.
    """
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type != "cpu":
        return False
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check is not None and check())


def training_device(accelerator: str) -> str:
    """The device type a Lightning ``accelerator`` setting trains on here."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    if accelerator == "mps" or (accelerator == "auto" and torch.backends.mps.is_available()):
        return "mps"
    return "cpu"


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """``precision`` with ``auto`` replaced by ``bf16-mixed`` where bf16 matrix products are native on
    the device ``accelerator`` trains on, else by ``32-true``; any other value is returned as it is."""
    if precision != AUTO:
        return precision
    return BF16_MIXED if fast_bf16_matmul(training_device(accelerator)) else FLOAT32


def emulates_bf16(precision: str, accelerator: str = "auto") -> bool:
    """Whether a run in ``precision`` emulates bf16 autocast's matrix products in float32: bf16-mixed on
    a CPU without native bf16 kernels (:mod:`flow_omni.emulated_bf16`)."""
    return (
        precision in (BF16_MIXED, "bf16")  # "bf16": Lightning's alias
        and training_device(accelerator) == "cpu"
        and not fast_bf16_matmul("cpu")
    )


def bf16_arithmetic(precision: str, accelerator: str = "auto") -> contextlib.AbstractContextManager:
    """The block a run in ``precision`` trains inside: :func:`~flow_omni.emulated_bf16.emulated_bf16_matmuls`
    where :func:`emulates_bf16`, else nothing."""
    if emulates_bf16(precision, accelerator):
        return emulated_bf16_matmuls()
    return contextlib.nullcontext()


def precision_note(precision: str, accelerator: str = "auto") -> str | None:
    """A one-line note when a run in ``precision`` will not use native bf16 kernels: emulated in float32
    on a CPU (as fast as float32), or slow on another device without them; else None."""
    if not precision.startswith("bf16") or fast_bf16_matmul(training_device(accelerator)):
        return None
    if emulates_bf16(precision, accelerator):
        return (
            f"note: precision {precision} on a CPU without native bf16 matrix products: linear layers, "
            "matmuls and convolutions run as float32 products of bf16-rounded inputs, rounded to bf16 "
            "(bf16 results at float32 speed); attention in bf16 stays on torch's slower kernel"
        )
    return (
        f"warning: precision {precision} on a device without native bf16 matrix products: a training step "
        "may take several times its float32 time; precision: auto chooses 32-true here"
    )


__all__ = [
    "AUTO",
    "BF16_MIXED",
    "FLOAT32",
    "bf16_arithmetic",
    "emulates_bf16",
    "fast_bf16_matmul",
    "precision_note",
    "resolve_precision",
]
