"""ODE integration of a flow-matching velocity field from t=0 (prior) to t=1 (data).

Two routes to the same ODE ``dx/dt = v(x, t)``:

- ``torchdiffeq.odeint`` for every solver in :data:`SOLVERS`: the fixed-grid ones (``euler``,
  ``midpoint``, ``heun``, ``rk4``) take ``steps`` equal steps on ``linspace(0, 1, steps + 1)``;
  ``dopri5`` is adaptive (``rtol``/``atol``; ``steps`` is ignored). ``heun`` is Heun's second-order
  method (explicit trapezoid), torchdiffeq's ``heun2``.
- a hand-written loop (:func:`fixed_grid_loop`) for the solvers in :data:`FAST_SOLVERS`, which
  performs the update odeint's solver does, in the same expression order and at the same stage
  times (:func:`stage_times`), without odeint's per-call bookkeeping (argument checks,
  perturbation wrappers, solution buffer). Its velocity function is told the index of the
  evaluation, so a caller can prepare what depends on time alone for the whole grid at once
  (``FlowHead.sample`` does).

Function evaluations per call (NFE): euler ``steps``, midpoint and heun ``2*steps``, rk4
``4*steps`` (torchdiffeq's rk4 is the 3/8-rule variant), dopri5 whatever its step-size control
needs; callers that want the exact count wrap ``fn`` with a counter (``FlowHead.sample`` does).

Shapes: ``x0`` is any tensor (typically ``(N, D)``); ``fn(t, x)`` receives a 0-d tensor ``t`` and a
tensor shaped like ``x0`` and returns the velocity shaped like ``x0``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``fn(k, x)``: the velocity at ``x`` and at the ``k``-th time of :func:`stage_times`.
IndexedVelocityFn = Callable[[int, torch.Tensor], torch.Tensor]

#: Solver name → order; fixed-grid solvers take ``steps`` steps, adaptive ones ignore ``steps``.
SOLVERS: dict[str, int] = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4, "dopri5": 5}
FIXED_GRID_SOLVERS = ("euler", "midpoint", "heun", "rk4")
ADAPTIVE_SOLVERS = ("dopri5",)
#: Fixed-grid solvers with a hand-written loop → network evaluations per step.
FAST_SOLVERS: dict[str, int] = {"euler": 1, "midpoint": 2, "heun": 2}
# Our names that torchdiffeq spells differently ("heun" alone would be ambiguous next to its heun3).
_TORCHDIFFEQ_METHOD = {"heun": "heun2"}


def check_solver_args(solver: str, steps: int, rtol: float, atol: float, fast: bool | None) -> None:
    """Raise ``ValueError`` naming the bad argument; shared by :func:`integrate` and callers."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown ODE solver {solver!r}; valid solvers are {list(SOLVERS)}")
    if solver in FIXED_GRID_SOLVERS:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1 for solver {solver!r}, got {steps!r}")
    else:
        for name, tol in (("rtol", rtol), ("atol", atol)):
            if not (isinstance(tol, (int, float)) and tol > 0):
                raise ValueError(f"{name} must be a positive number for solver {solver!r}, got {tol!r}")
    if fast is True and solver not in FAST_SOLVERS:
        # Silently ignoring fast=True would make a benchmark that asks for it measure something
        # else than it claims.
        raise ValueError(
            f"fast=True is only available for solvers {list(FAST_SOLVERS)}, got solver={solver!r}; pass fast=None"
        )


def uses_fast_loop(solver: str, fast: bool | None) -> bool:
    """Whether :func:`integrate` takes the hand-written loop: by default wherever one exists."""
    return solver in FAST_SOLVERS and fast is not False


def time_grid(steps: int, *, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """``(steps + 1,)`` equally spaced times from 0 to 1, shared by both routes so they agree."""
    return torch.linspace(0.0, 1.0, steps + 1, dtype=dtype, device=device)


def stage_times(solver: str, steps: int, *, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """``(steps * FAST_SOLVERS[solver],)`` times at which :func:`fixed_grid_loop` evaluates, in order.

    Computed with torchdiffeq's expressions (midpoint ``t0 + 0.5 * dt``, heun ``t0 + dt``, which
    can differ from ``t1`` in the last bit) so both routes evaluate the field at the same times.
    """
    grid = time_grid(steps, dtype=dtype, device=device)
    t0, dt = grid[:-1], grid[1:] - grid[:-1]
    if solver == "euler":
        return t0
    if solver == "midpoint":
        return torch.stack([t0, t0 + 0.5 * dt], dim=1).flatten()
    if solver == "heun":
        return torch.stack([t0, t0 + dt], dim=1).flatten()
    raise ValueError(f"no hand-written loop for solver {solver!r}; it has {list(FAST_SOLVERS)}")


@functools.lru_cache(maxsize=64)
def grid_step_sizes(steps: int, dtype: torch.dtype, device: torch.device) -> tuple[float, ...]:
    """The grid's exact step sizes as Python floats: multiplying by them rounds as multiplying by
    the 0-d tensors odeint uses, without an extra tensor op per step. Cached: building them costs
    three tensor ops and a device read per sampled token."""
    grid = time_grid(steps, dtype=dtype, device=device)
    return tuple((grid[1:] - grid[:-1]).tolist())


def fixed_grid_loop(fn: IndexedVelocityFn, x0: torch.Tensor, *, solver: str, steps: int) -> torch.Tensor:
    """``steps`` steps of ``solver`` from t=0 to t=1, calling ``fn(k, x)`` for k = 0, 1, … in order.

    The updates are torchdiffeq's, term for term (``dy = dt * f``, ``y1 = y0 + dy``; midpoint's
    ``y0 + f0 * half_dt``; heun's ``dt * (k1 * 1/2 + k2 * 1/2)``), so both routes round alike and
    agree far below 1e-5.
    """
    return grid_loop(fn, x0, solver=solver, dts=grid_step_sizes(steps, x0.dtype, x0.device))


def grid_loop(fn: IndexedVelocityFn, x0: torch.Tensor, *, solver: str, dts: tuple[float, ...]) -> torch.Tensor:
    """:func:`fixed_grid_loop` over the step sizes ``dts`` (:func:`grid_step_sizes`), given apart so
    that ``torch.compile`` traces the loop with them as constants rather than the tensor ops and
    cache lookup that make them."""
    if solver not in FAST_SOLVERS:
        raise ValueError(f"no hand-written loop for solver {solver!r}; it has {list(FAST_SOLVERS)}")
    x = x0
    for i, dt in enumerate(dts):
        if solver == "euler":
            x = x + dt * fn(i, x)
        elif solver == "midpoint":
            f0 = fn(2 * i, x)
            x = x + dt * fn(2 * i + 1, x + f0 * (0.5 * dt))
        else:
            f0 = fn(2 * i, x)
            f1 = fn(2 * i + 1, x + dt * f0)
            x = x + dt * (f0 * 0.5 + f1 * 0.5)
    return x


def integrate(
    fn: VelocityFn,
    x0: torch.Tensor,
    *,
    solver: str = "euler",
    steps: int = 10,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    fast: bool | None = None,
) -> torch.Tensor:
    """Solve ``dx/dt = fn(t, x)`` from ``x(0) = x0`` and return ``x(1)`` (same shape as ``x0``).

    ``fast``: ``None`` (default) uses the hand-written loop where there is one
    (:data:`FAST_SOLVERS`) and odeint otherwise; ``True`` demands the hand-written loop;
    ``False`` forces ``torchdiffeq.odeint``.
    """
    check_solver_args(solver, steps, rtol, atol, fast)
    if uses_fast_loop(solver, fast):
        times = stage_times(solver, steps, dtype=x0.dtype, device=x0.device)
        return fixed_grid_loop(lambda k, x: fn(times[k], x), x0, solver=solver, steps=steps)
    return _odeint(fn, x0, solver=solver, steps=steps, rtol=rtol, atol=atol)


def _odeint(fn: VelocityFn, x0: torch.Tensor, *, solver: str, steps: int, rtol: float, atol: float) -> torch.Tensor:
    """``x(1)`` by ``torchdiffeq.odeint``: the reference route, and the only one for adaptive solvers."""
    from torchdiffeq import odeint  # imported lazily: only this route needs it

    method = _TORCHDIFFEQ_METHOD.get(solver, solver)
    t_span = torch.tensor([0.0, 1.0], dtype=x0.dtype, device=x0.device)
    if solver in FIXED_GRID_SOLVERS:
        grid = time_grid(steps, dtype=x0.dtype, device=x0.device)
        # A grid_constructor (rather than passing the whole grid as ``t``) keeps odeint from
        # storing and interpolating every intermediate state we would throw away.
        options = {"grid_constructor": lambda _f, _y0, _t: grid}
        out = odeint(fn, x0, t_span, method=method, options=options)
    else:
        out = odeint(fn, x0, t_span, method=method, rtol=rtol, atol=atol)
    return out[-1]
