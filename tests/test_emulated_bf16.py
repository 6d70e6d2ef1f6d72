"""bf16 autocast's matrix products emulated in float32 (flow_omni.emulated_bf16) give the numbers
torch's own bf16 kernels give, for every operator it replaces, and put those kernels back after."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flow_omni.emulated_bf16 import EMULATED_OPS, emulated_bf16_matmuls, emulation_active


def _r(*shape):
    return torch.randn(*shape)


#: One call per operator in EMULATED_OPS: (inputs, function of them)
CASES = {
    "linear.default": ((_r(3, 9, 32), _r(24, 32), _r(24)), lambda x, w, b: F.linear(x, w, b)),
    "matmul.default": ((_r(3, 9, 32), _r(32, 24)), torch.matmul),
    "mm.default": ((_r(9, 32), _r(32, 24)), torch.mm),
    "bmm.default": ((_r(3, 9, 32), _r(3, 32, 24)), torch.bmm),
    "addmm.default": ((_r(24), _r(9, 32), _r(32, 24)), torch.addmm),
    "baddbmm.default": ((_r(3, 9, 24), _r(3, 9, 32), _r(3, 32, 24)), torch.baddbmm),
    "conv1d.default": ((_r(2, 16, 30), _r(8, 16, 5)), lambda x, k: F.conv1d(x, k, padding=2)),
    "conv1d.padding": ((_r(2, 16, 30), _r(8, 16, 5)), lambda x, k: F.conv1d(x, k, padding="same")),
    "conv2d.default": ((_r(2, 4, 9, 9), _r(6, 4, 3, 3)), lambda x, k: F.conv2d(x, k)),
    "conv2d.padding": ((_r(2, 4, 9, 9), _r(6, 4, 3, 3)), lambda x, k: F.conv2d(x, k, padding="same")),
    "conv3d.default": ((_r(1, 2, 5, 5, 5), _r(3, 2, 3, 3, 3)), lambda x, k: F.conv3d(x, k)),
    "conv3d.padding": ((_r(1, 2, 5, 5, 5), _r(3, 2, 3, 3, 3)), lambda x, k: F.conv3d(x, k, padding="same")),
}
#: The convolutions' bf16 backward kernels round partial sums, where the emulation rounds the exact
#: product once: their gradients agree more loosely.
LOOSE_GRADIENTS = {n for n in EMULATED_OPS if n.startswith("conv")}
#: Left to their bf16 kernels, which round partial results or intermediates (the module's docstring).
NOT_EMULATED = {
    "addbmm": ((_r(9, 24), _r(3, 9, 32), _r(3, 32, 24)), torch.addbmm),
    "conv_transpose1d": ((_r(2, 16, 30), _r(16, 8, 4)), lambda x, k: F.conv_transpose1d(x, k, stride=2)),
    "scaled_dot_product_attention": (
        (_r(2, 2, 9, 16), _r(2, 2, 9, 16), _r(2, 2, 9, 16)),
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    ),
}


def _run(name, cases=CASES):
    torch.manual_seed(1)
    inputs, fn = cases[name]
    inputs = [t.clone().requires_grad_() for t in inputs]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(*inputs)
    (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), [t.grad for t in inputs]


def _differing(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() != b.float()).float().mean())


def test_every_emulated_operator_is_one_autocast_runs_in_bf16_and_has_a_case():
    """Replacing an operator autocast keeps in float32 would change its arithmetic, not emulate it."""
    assert set(CASES) == set(EMULATED_OPS)
    for name in EMULATED_OPS:
        out, _ = _run(name)
        assert out.dtype == torch.bfloat16, name


@pytest.mark.parametrize("name", EMULATED_OPS)
def test_emulated_products_equal_the_bf16_kernels(name):
    """The same bf16 numbers as torch's bf16 kernels, up to the order of float32 sums: almost every
    output identical, none more than one bf16 step apart; gradients in float32, from bf16 products."""
    native_out, native_grads = _run(name)
    with emulated_bf16_matmuls():
        assert emulation_active()
        out, grads = _run(name)
    assert not emulation_active()
    assert out.dtype == torch.bfloat16
    # Unrounded float32 inputs would leave about half the outputs one bf16 step off.
    assert _differing(out, native_out) < 0.03, name
    torch.testing.assert_close(out.float(), native_out.float(), rtol=2**-7, atol=2**-7 * float(native_out.abs().max()))
    for grad, native in zip(grads, native_grads, strict=True):
        assert grad.dtype == native.dtype == torch.float32
        assert torch.equal(grad, grad.bfloat16().float()), f"{name}: a gradient off the bf16 grid"
        if name in LOOSE_GRADIENTS:
            torch.testing.assert_close(grad, native, rtol=2**-5, atol=2**-5 * float(native.abs().max()))
        else:
            assert _differing(grad, native) < 0.03, name
            torch.testing.assert_close(grad, native, rtol=2**-7, atol=2**-7 * float(native.abs().max()))


@pytest.mark.parametrize("name", NOT_EMULATED)
def test_operators_that_round_partial_results_keep_the_bf16_kernels(name):
    native_out, native_grads = _run(name, NOT_EMULATED)
    with emulated_bf16_matmuls():
        out, grads = _run(name, NOT_EMULATED)
    assert torch.equal(out, native_out)
    assert all(torch.equal(g, n) for g, n in zip(grads, native_grads, strict=True))


def _kernels() -> dict[str, str]:
    """What the dispatcher holds for each emulated operator (which kernel, registered where)."""
    return {name: torch._C._dispatch_dump(f"aten::{name.removesuffix('.default')}") for name in EMULATED_OPS}


def test_autocasts_own_kernels_come_back_after_the_block_and_blocks_nest():
    before = _kernels()
    with emulated_bf16_matmuls():
        inside = _kernels()
        assert all("emulated_bf16.py" in inside[name] for name in EMULATED_OPS)
        with emulated_bf16_matmuls():
            pass
        assert _kernels() == inside  # the inner block's exit kept the outer block's kernels
        assert emulation_active()
    assert not emulation_active()
    assert _kernels() == before


def test_the_kernels_come_back_when_the_block_raises():
    before = _kernels()
    with pytest.raises(RuntimeError, match="inside"):
        with emulated_bf16_matmuls():
            raise RuntimeError("inside")
    assert _kernels() == before


def test_float16_autocast_is_left_as_it_is():
    x, w = _r(9, 32), _r(24, 32)
    with torch.autocast("cpu", dtype=torch.float16):
        native = F.linear(x, w)
    with emulated_bf16_matmuls(), torch.autocast("cpu", dtype=torch.float16):
        inside = F.linear(x, w)
    assert inside.dtype == native.dtype == torch.float16
    assert torch.equal(inside, native)


def test_products_outside_autocast_are_untouched():
    x, w = _r(9, 32), _r(32, 24)
    with emulated_bf16_matmuls():
        assert torch.equal(x @ w, torch.mm(x, w))
        assert (x @ w).dtype == torch.float32
        assert torch.equal(x.bfloat16() @ w.bfloat16(), torch.mm(x.bfloat16(), w.bfloat16()))
