"""``precision: auto``: bf16-mixed autocast where this machine multiplies bf16 matrices natively,
float32 where it does not.

bf16 autocast halves a step of the learn recipe on a CPU with AVX-512 bf16, and makes it about ten
times slower on one with AVX2 alone, where torch multiplies bf16 matrices in a generic loop
(README, "Training precision on CPUs without bf16"). A recipe that names one precision is fast on
one kind of machine only, so the CPU recipes say ``auto`` and a run resolves it when it starts; the
run's ``config.yaml`` then records what it trained in.
"""

from __future__ import annotations

import functools

import torch

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


def slow_bf16_warning(precision: str, accelerator: str = "auto") -> str | None:
    """A one-line warning when ``precision`` asks for bf16 on a device without native bf16 matrix
    products (a step then takes several times its float32 time), else None."""
    if not precision.startswith("bf16") or fast_bf16_matmul(training_device(accelerator)):
        return None
    return (
        f"precision {precision} on a device without native bf16 matrix products (torch finds no "
        "oneDNN bf16 path on this CPU): a training step may take about ten times its float32 time; "
        "precision: auto chooses 32-true here"
    )


__all__ = ["AUTO", "BF16_MIXED", "FLOAT32", "fast_bf16_matmul", "resolve_precision", "slow_bf16_warning"]
