"""bf16 autocast's matrix products at float32 speed, on CPUs without native bf16 kernels.

Under bf16 autocast on a CPU, torch casts the float inputs of a matrix product (``linear``,
``matmul``, ``bmm``, the convolutions) to bf16, multiplies them with a bf16 kernel that
sums in float32, and returns bf16. Where oneDNN has no bf16 path (an x86 CPU without AVX-512), that
kernel is a generic loop, about ten times slower than float32.

Two bf16 numbers multiply exactly in float32 (8 + 8 significant bits fit in 24). So rounding the
inputs to bf16, multiplying them with the float32 kernel and rounding the result to bf16 gives the
numbers the bf16 kernel gives, up to the order of the float32 sums. Inside
:func:`emulated_bf16_matmuls` every such product runs that way. The roundings are ordinary tensor
casts that autograd records, so the backward products also see bf16 operands and return bf16
results, as under native autocast. Where torch's bf16 backward rounds more often than that (a
convolution's partial sums, a product scaled by ``alpha``), the emulated gradient is the more
precise one: the exact product of the same bf16 operands, rounded once.

Costs and limits: the recorded casts keep float32 copies of a product's inputs for the backward
(twice what native autocast keeps, and a weight used several times is kept once per use, where
autocast caches one bf16 copy); ``torch.compile`` bakes in whichever kernels were registered when it
traced, so a graph compiled outside the block stays native inside it. Autocast to float16 is left as
it is.

Operators whose bf16 kernels also round partial results are left to those kernels, since emulating
them would change the arithmetic: ``addbmm`` (rounds after each product of its batch), the transposed
convolutions (round their overlapping sums) and attention (rounds the softmax weights before
multiplying them by the values; the ``learn`` recipe's ``sdpa_float32`` attention runs in float32
anyway).

This is what lets a run that asks for ``bf16-mixed`` train in bf16 arithmetic on such a machine (a
grid whose first runs trained in bf16, say). ``precision: auto`` still chooses float32 there, which
is as fast and more precise.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from collections.abc import Iterator

import torch
from torch.utils._pytree import tree_map

#: Operators autocast runs in bf16 on a CPU whose work is matrix products summed in float32, as
#: ``name.overload``. Others reach them (``einsum`` and ``tensordot`` through ``bmm``).
EMULATED_OPS = (
    "linear.default",
    "matmul.default",
    "mm.default",
    "bmm.default",
    "addmm.default",
    "baddbmm.default",
    "conv1d.default",
    "conv1d.padding",
    "conv2d.default",
    "conv2d.padding",
    "conv3d.default",
    "conv3d.padding",
)

_lock = threading.Lock()
_active = 0
_library: torch.library.Library | None = None


def _cast_by_autocast(value) -> bool:
    """Whether autocast casts ``value`` to its lower precision: a float tensor other than float64."""
    return isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64


def _to_bf16_grid(value):
    """A tensor autocast would cast, as float32 holding its bf16 rounding; anything else as it is."""
    return value.to(torch.bfloat16).float() if _cast_by_autocast(value) else value


def _to_dtype(value, dtype: torch.dtype):
    return value.to(dtype) if _cast_by_autocast(value) else value


def _to_bf16(value):
    if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
        return value.to(torch.bfloat16)
    return value


def _kernel(op: torch._ops.OpOverload):
    def emulated(*args, **kwargs):
        dtype = torch.get_autocast_dtype("cpu")
        if dtype == torch.bfloat16:
            args, kwargs = tree_map(_to_bf16_grid, (args, kwargs))
            with torch.autocast("cpu", enabled=False):  # else the call below comes back here
                out = op(*args, **kwargs)
            return tree_map(_to_bf16, out)
        # Another autocast dtype (float16): what autocast's own kernel does, cast and call.
        args, kwargs = tree_map(functools.partial(_to_dtype, dtype=dtype), (args, kwargs))
        with torch.autocast("cpu", enabled=False):
            return op(*args, **kwargs)

    return emulated


def _register() -> torch.library.Library:
    library = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        # torch warns that these replace autocast's own kernels, which is the point.
        warnings.filterwarnings("ignore", message=".*[Oo]verrid")
        for name in EMULATED_OPS:
            packet, overload = name.split(".")
            op = getattr(getattr(torch.ops.aten, packet), overload)
            library.impl(op, _kernel(op), "AutocastCPU")
    return library


def emulation_active() -> bool:
    """Whether some thread is inside :func:`emulated_bf16_matmuls` now."""
    return _active > 0


@contextlib.contextmanager
def emulated_bf16_matmuls() -> Iterator[None]:
    """Within this block, bf16 autocast on a CPU runs :data:`EMULATED_OPS` as float32 products of
    bf16-rounded inputs, rounded to bf16. Process-wide while any thread is inside; blocks may nest."""
    global _active, _library
    with _lock:
        if _active == 0:
            _library = _register()
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _library is not None:
                # Puts autocast's own kernels back (what the library's finaliser does when it is collected).
                destroy = getattr(_library, "_destroy", None)
                if destroy is not None:
                    destroy()
                _library = None


__all__ = ["EMULATED_OPS", "emulated_bf16_matmuls", "emulation_active"]
