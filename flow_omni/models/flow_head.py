"""The flow-matching head: a small AdaLN MLP that samples one continuous speech token per step.

Architecture = MAR's ``SimpleMLPAdaLN`` (DiffLoss): input projection of the noisy token, a
sinusoidal embedding of the flow time through an MLP, condition ``y = time_emb + Linear(z)`` with
``z`` the LLM hidden state, ``depth`` residual blocks (LayerNorm → AdaLN shift/scale →
Linear-SiLU-Linear → gated residual) and an AdaLN final layer. Modulation and output layers start
at zero, so a fresh head predicts ``v = 0`` and every block starts as the identity.

Training objective (conditional flow matching on the linear path)::

    x_t = (1 - (1 - σ_min) t) x0 + t x1,    u = x1 - (1 - σ_min) x0,    loss = ||v(x_t, t, z) - u||²

with ``x0`` drawn from the prior: ``N(0, prior_std² I)`` (``prior="gaussian"``) or, as in FELLE,
``N(x_prev, prior_std² I)`` centred on the previous token (``prior="previous"``), which makes the
path short enough for a few Euler steps. Each target is seen ``repeats`` times per step with fresh
``(t, x0)`` (MAR's ``diffusion_batch_mul``): the head is cheap next to the LLM that produced ``z``.

Classifier-free guidance: with ``cfg_dropout > 0`` training replaces ``z`` by a learned
``null_cond``; sampling with ``cfg_scale != 1`` uses ``v_u + s (v_c - v_u)``.

Shapes: ``N`` rows (tokens), ``D = token_dim`` (``r * n_mels``), ``C = cond_dim``, ``W = width``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn as nn

from flow_omni.config import Config
from flow_omni.errors import ConfigError, MelShapeError
from flow_omni.models.ode import (
    FAST_SOLVERS,
    check_solver_args,
    grid_loop,
    grid_step_sizes,
    integrate,
    stage_times,
    uses_fast_loop,
)


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"FlowHeadConfig.{name} must be an integer >= 1, got {value!r}")


@dataclasses.dataclass
class FlowHeadConfig(Config):
    """Hyper-parameters of :class:`FlowHead` (stored in every checkpoint)."""

    token_dim: int  # D: r * n_mels
    cond_dim: int  # C: hidden size of whatever produces z
    width: int = 512
    depth: int = 3  # residual blocks
    freq_dim: int = 256  # size of the sinusoidal time embedding
    sigma_min: float = 1e-4
    repeats: int = 4  # (t, x0) draws per target per training step
    cfg_dropout: float = 0.0  # probability of training on null_cond instead of z
    prior: Literal["gaussian", "previous"] = "gaussian"
    prior_std: float = 1.0
    # t is multiplied by this before the sinusoid. 1000 is MAR's (diffusion steps 0..999); a smaller
    # scale makes the field smoother in t, which adaptive solvers need fewer evaluations for
    # (README, "Model choices"; benchmarks/flow_head.py --time-scale).
    time_scale: float = 1000.0
    # Scheduled sampling of the prior (prior="previous" only). Trained on true previous tokens alone,
    # the head carries an error in its own previous sample over into the next and grows it (README,
    # "Found: the flow head's own previous token makes its errors grow"; what this option did there:
    # "Tried and not kept: training the head on its own previous tokens"). The fraction of training
    # rows whose prior is centred instead on the head's own greedy sample of the previous token, drawn
    # without gradient with `own_previous_steps` Euler steps, `own_previous_rounds` times in a row
    # (round k starts from round k-1's samples, so the errors of k consecutive own tokens are seen).
    # 3 steps, not generation's 10, to keep the extra sampling cheap; the errors it shows the head are
    # therefore those of 3-step samples.
    own_previous: float = 0.0
    own_previous_steps: int = 3
    own_previous_rounds: int = 1

    def __post_init__(self) -> None:
        for name in ("token_dim", "cond_dim", "width", "depth", "freq_dim", "repeats"):
            _positive_int(name, getattr(self, name))
        for name in ("own_previous_steps", "own_previous_rounds"):
            _positive_int(name, getattr(self, name))
        if self.freq_dim % 2:
            raise ConfigError(f"FlowHeadConfig.freq_dim must be even (cos and sin halves), got {self.freq_dim}")
        if not (isinstance(self.sigma_min, (int, float)) and 0.0 <= self.sigma_min < 1.0):
            raise ConfigError(f"FlowHeadConfig.sigma_min must be in [0, 1), got {self.sigma_min!r}")
        if not (isinstance(self.cfg_dropout, (int, float)) and 0.0 <= self.cfg_dropout < 1.0):
            raise ConfigError(f"FlowHeadConfig.cfg_dropout must be in [0, 1), got {self.cfg_dropout!r}")
        if self.prior not in ("gaussian", "previous"):
            raise ConfigError(f"FlowHeadConfig.prior must be 'gaussian' or 'previous', got {self.prior!r}")
        if not (isinstance(self.prior_std, (int, float)) and math.isfinite(self.prior_std) and self.prior_std > 0):
            raise ConfigError(f"FlowHeadConfig.prior_std must be a positive number, got {self.prior_std!r}")
        if not (isinstance(self.time_scale, (int, float)) and math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ConfigError(f"FlowHeadConfig.time_scale must be a positive number, got {self.time_scale!r}")
        if not (isinstance(self.own_previous, (int, float)) and 0.0 <= self.own_previous <= 1.0):
            raise ConfigError(f"FlowHeadConfig.own_previous must be a fraction in [0, 1], got {self.own_previous!r}")
        if self.own_previous > 0 and self.prior != "previous":
            raise ConfigError(
                "FlowHeadConfig.own_previous needs prior='previous' (it replaces the prior's centre), "
                f"got prior={self.prior!r}"
            )


@dataclasses.dataclass
class FlowNoise:
    """Random draws of one CFM loss evaluation: ``t`` ``(N*R,)``, ``x0`` ``(N*R, D)`` (unit variance,
    before ``prior_std`` and the prior mean), ``drop`` ``(N,)`` bool (CFG null condition)."""

    t: torch.Tensor
    x0: torch.Tensor
    drop: torch.Tensor

    @staticmethod
    def cat(parts: list[FlowNoise]) -> FlowNoise:
        return FlowNoise(
            torch.cat([p.t for p in parts]), torch.cat([p.x0 for p in parts]), torch.cat([p.drop for p in parts])
        )


def modulate(x: torch.Tensor, shift: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """AdaLN ``x * (1 + scale) + shift`` with ``factor = 1 + scale`` formed by the layer's
    ``modulation``: the sampler forms it once per token instead of once per evaluation."""
    return torch.addcmul(shift, x, factor)  # one op where `x * factor + shift` takes two


class TimestepEmbedder(nn.Module):
    """Flow time ``t ∈ [0, 1]`` ``(N,)`` → ``(N, W)``: sinusoid of ``scale * t``, then a 2-layer MLP.

    The scale puts ``t`` on the range DiT/MAR's frequencies (max period 10⁴) were chosen for;
    without it most of the embedding would be nearly constant over [0, 1].
    """

    def __init__(self, width: int, freq_dim: int, scale: float = 1000.0):
        super().__init__()
        self.freq_dim = freq_dim
        self.scale = scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))
        half = freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = (self.scale * t.to(self.freqs.dtype))[:, None] * self.freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    """``(N, W)`` → ``(N, W)``: ``x + gate * MLP(modulate(LN(x), shift, scale))``, AdaLN from ``y``.

    :meth:`modulation` (from ``y``) and :meth:`modulated` (on ``x``) are the two halves of
    :meth:`forward`, apart so that a sampler can form the modulations of many ``y`` at once.
    """

    def __init__(self, width: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def modulation(self, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``y (..., W)`` → ``(shift, 1 + scale, gate)``, each ``(..., W)``."""
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return shift, 1 + scale, gate

    def modulated(self, x: torch.Tensor, shift: torch.Tensor, factor: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(x, gate, self.mlp(modulate(self.in_ln(x), shift, factor)))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.modulated(x, *self.modulation(y))


class FinalLayer(nn.Module):
    """``(N, W)`` → ``(N, D)``: affine-free LayerNorm, AdaLN modulation from ``y``, linear."""

    def __init__(self, width: int, out_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def modulation(self, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``y (..., W)`` → ``(shift, 1 + scale)``, each ``(..., W)``."""
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return shift, 1 + scale

    def modulated(self, x: torch.Tensor, shift: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        return self.linear(modulate(self.norm_final(x), shift, factor))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.modulated(x, *self.modulation(y))


def _at_weights_precision(method):
    """Run ``method`` at the precision of the head's weights (float32), also inside an autocast region
    (``precision: bf16-mixed``). The head regresses the continuous speech token itself: in bf16 its
    velocity, and so every sampled mel value, would keep 8 bits of mantissa (0.4% steps), and the head
    is a few percent of a step's compute next to the LLM."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with torch.autocast(device_type=self.input_proj.weight.device.type, enabled=False):
            return method(self, *args, **kwargs)

    return run


class FlowHead(nn.Module):
    """Velocity field ``v(x (N, D), t (N,), z (N, C)) → (N, D)`` with training loss and sampler.

    ``nfe`` holds the number of network evaluations of the last :meth:`sample` call (a CFG
    evaluation runs conditional and unconditional rows in one batched forward and counts once).
    """

    def __init__(self, config: FlowHeadConfig):
        super().__init__()
        self.config = config
        d, c, w = config.token_dim, config.cond_dim, config.width
        self.input_proj = nn.Linear(d, w)
        self.time_embed = TimestepEmbedder(w, config.freq_dim, config.time_scale)
        self.cond_embed = nn.Linear(c, w)
        self.res_blocks = nn.ModuleList(ResBlock(w) for _ in range(config.depth))
        self.final_layer = FinalLayer(w, d)
        # Stands in for z when the condition is dropped (CFG); small like a token embedding.
        self.null_cond = nn.Parameter(torch.randn(c) * 0.02)
        self.nfe = 0
        # (solver, steps, dtype, device) → (weights key, (K, W) time embeddings of that grid), and
        # "modulation" → (weights key, the fused adaLN weight and bias).
        self._time_cache: dict = {}
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.time_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.time_embed.mlp[2].weight, std=0.02)
        # Zero modulation ⇒ gates are 0 and every block is the identity at init (DiT/MAR); zero
        # output ⇒ the initial velocity is 0, so early training is not dominated by a random field.
        for layer in [b.adaLN_modulation[-1] for b in self.res_blocks] + [self.final_layer.adaLN_modulation[-1]]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    # ------------------------------------------------------------------ shapes and building blocks
    def _check(self, name: str, x: torch.Tensor, dim: int, rows: int | None) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"FlowHead: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != dim or (rows is not None and x.shape[0] != rows):
            want = f"({rows if rows is not None else 'N'}, {dim})"
            raise MelShapeError(f"FlowHead: {name} must have shape {want}, got {tuple(x.shape)}")

    def _mean_of_prior(self, prev: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        """``(N, D)`` prior mean, or None for the zero-mean Gaussian prior."""
        if self.config.prior == "gaussian":
            return None  # prev is ignored so callers may always pass it
        if prev is None:
            raise ValueError(
                "FlowHead: prior='previous' needs prev (N, D), the previous token of each row "
                "(zeros for rows that have none)"
            )
        self._check("prev", prev, self.config.token_dim, like.shape[0])
        return prev.to(like.dtype)

    def _forward(self, x: torch.Tensor, t_emb: torch.Tensor, c_emb: torch.Tensor) -> torch.Tensor:
        """Core network on embedded time ``(N or 1, W)`` and condition ``(N, W)``."""
        return self._forward_modulated(x, self._modulations(t_emb + c_emb))

    def _modulations(self, y: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """AdaLN inputs ``y (..., W)`` → what every layer modulates with: one ``(shift, 1 + scale,
        gate)`` per block and ``(shift, 1 + scale)`` for the final layer, each ``(..., W)``."""
        return [block.modulation(y) for block in self.res_blocks] + [self.final_layer.modulation(y)]

    def _forward_modulated(self, x: torch.Tensor, mods: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
        """Core network on ``x (N, D)`` given :meth:`_modulations` of ``N`` rows → ``(N, D)``."""
        h = self.input_proj(x)
        for block, block_mods in zip(self.res_blocks, mods):
            h = block.modulated(h, *block_mods)
        return self.final_layer.modulated(h, *mods[-1])

    def _guided_velocity(self, x: torch.Tensor, mods: list[tuple[torch.Tensor, ...]], cfg_scale: float) -> torch.Tensor:
        """One sampler evaluation: ``x (N, D)`` → ``(N, D)`` from modulations of ``N`` rows, or with
        CFG (``cfg_scale != 1``) of ``2N`` rows (conditional, then unconditional): one forward over
        both halves, half the kernel launches of two."""
        if cfg_scale == 1.0:
            return self._forward_modulated(x, mods)
        v_c, v_u = self._forward_modulated(torch.cat([x, x], dim=0), mods).chunk(2, dim=0)
        return v_u + cfg_scale * (v_c - v_u)

    def velocity(self, x: torch.Tensor, t: torch.Tensor | float, z: torch.Tensor) -> torch.Tensor:
        """``v(x, t, z)``: x ``(N, D)``, t ``(N,)`` or scalar in [0, 1], z ``(N, C)`` → ``(N, D)``."""
        self._check("x", x, self.config.token_dim, None)
        self._check("z", z, self.config.cond_dim, x.shape[0])
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        elif t.shape != (x.shape[0],):
            raise MelShapeError(f"FlowHead: t must be a scalar or shape ({x.shape[0]},), got {tuple(t.shape)}")
        return self._forward(x, self.time_embed(t), self.cond_embed(z))

    # ------------------------------------------------------------------------------------- training
    def draw_noise(
        self, n: int, generator: torch.Generator | None = None, device=None, dtype: torch.dtype = torch.float32
    ) -> FlowNoise:
        """The random draws of :meth:`loss` for ``n`` rows: ``t`` and unit-variance ``x0`` for each
        of the ``repeats`` copies (row-major), and the CFG drop decision of each row."""
        cfg = self.config
        # Draw the drop decisions only when they are used, so runs without CFG keep their stream.
        drop = (
            (torch.rand(n, generator=generator, device=device) < cfg.cfg_dropout)
            if cfg.cfg_dropout > 0
            else torch.zeros(n, dtype=torch.bool, device=device)
        )
        t = torch.rand(n * cfg.repeats, generator=generator, dtype=dtype, device=device)
        x0 = torch.randn(n * cfg.repeats, cfg.token_dim, generator=generator, dtype=dtype, device=device)
        return FlowNoise(t, x0, drop)

    @_at_weights_precision
    def loss(
        self,
        target: torch.Tensor,
        z: torch.Tensor,
        prev: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: FlowNoise | None = None,
    ) -> torch.Tensor:
        """Scalar CFM loss: MSE over dims, mean over ``repeats`` draws, masked mean over rows.

        target ``(N, D)`` clean tokens x1; z ``(N, C)``; prev ``(N, D)`` (needed for
        ``prior="previous"``); mask ``(N,)`` bool/float, rows with 0 do not count. ``noise``
        (from :meth:`draw_noise`) fixes the random draws instead of taking them from ``generator``:
        the trainer draws them per sample, so a row's noise does not depend on which batch or
        which DDP rank it landed in.
        """
        cfg = self.config
        self._check("target", target, cfg.token_dim, None)
        n = target.shape[0]
        self._check("z", z, cfg.cond_dim, n)
        dtype = self.input_proj.weight.dtype  # z comes out of an autocast region in bf16-mixed training
        target, z = target.to(dtype), z.to(dtype)
        mean = self._mean_of_prior(prev, target)
        if mask is not None:
            if mask.shape != (n,):
                raise MelShapeError(f"FlowHead: mask must have shape ({n},), got {tuple(mask.shape)}")
            weight = mask.to(target.dtype)
        else:
            weight = torch.ones(n, dtype=target.dtype, device=target.device)

        if noise is None:
            noise = self.draw_noise(n, generator=generator, device=target.device, dtype=target.dtype)
        elif noise.t.shape != (n * cfg.repeats,) or noise.x0.shape != (n * cfg.repeats, cfg.token_dim):
            raise MelShapeError(
                f"FlowHead: noise was drawn for {noise.t.shape[0] // cfg.repeats} rows, the batch has {n}"
            )
        if self.training and cfg.cfg_dropout > 0:
            z = torch.where(noise.drop[:, None], self.null_cond.to(z.dtype).expand_as(z), z)
        # Embed the condition once per row, then repeat: the Linear is the same for every draw.
        c_emb = self.cond_embed(z).repeat_interleave(cfg.repeats, dim=0)
        x1 = target.repeat_interleave(cfg.repeats, dim=0)  # (N*R, D)
        t = noise.t.to(x1)
        x0 = cfg.prior_std * noise.x0.to(x1)
        if mean is not None:
            x0 = x0 + mean.repeat_interleave(cfg.repeats, dim=0)
        keep = 1.0 - cfg.sigma_min
        tt = t[:, None]
        x_t = (1.0 - keep * tt) * x0 + tt * x1
        u = x1 - keep * x0
        v = self._forward(x_t, self.time_embed(t), c_emb)
        per_row = (v - u).pow(2).mean(dim=-1).view(n, cfg.repeats).mean(dim=-1)  # (N,)
        # clamp: an all-masked batch gives 0 (with a graph) rather than NaN.
        return (per_row * weight).sum() / weight.sum().clamp_min(1e-8)

    # ------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    @_at_weights_precision
    def sample(
        self,
        z: torch.Tensor,
        prev: torch.Tensor | None = None,
        *,
        steps: int = 10,
        solver: str = "euler",
        temperature: float = 1.0,
        cfg_scale: float = 1.0,
        generator: torch.Generator | None = None,
        fast: bool | None = None,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        noise: torch.Tensor | None = None,
        compile: bool = False,
    ) -> torch.Tensor:
        """Draw one token per row: z ``(N, C)`` (prev ``(N, D)``) → ``(N, D)``.

        ``x0 = prior_mean + temperature * prior_std * noise`` is integrated from t=0 to 1 with
        ``solver`` (see :mod:`flow_omni.models.ode`; ``steps`` is ignored by ``dopri5``, which uses
        ``rtol``/``atol``). ``noise`` ``(N, D)`` overrides the draw from ``generator`` (to compare
        solvers or dtypes on identical noise).

        ``fast=None`` takes the fixed-grid sampler for euler, midpoint and heun: the same ODE as
        ``torchdiffeq.odeint`` with the same updates at the same times, but the time embeddings
        of the grid are computed once per (grid, weights) and the adaLN modulations of all its
        times once per call, so an evaluation runs only the input projection, the blocks' MLPs and
        the output layer. ``fast=False`` forces ``torchdiffeq.odeint`` (the reference). ``compile``
        runs the fixed-grid sampler's whole trajectory through ``torch.compile`` as one graph (with
        ``odeint``, each evaluation); it is off by default because the first call of each solver, step
        count and CFG setting compiles for seconds and needs a C compiler, and what it gains is for
        ``benchmarks/generation.py --compile`` to say.
        """
        cfg = self.config
        self._check("z", z, cfg.cond_dim, None)
        check_solver_args(solver, steps, rtol, atol, fast)
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        if not (isinstance(cfg_scale, (int, float)) and math.isfinite(cfg_scale)):
            raise ValueError(f"cfg_scale must be a finite number, got {cfg_scale!r}")
        n = z.shape[0]
        dtype = self.input_proj.weight.dtype
        z = z.to(dtype)
        mean = self._mean_of_prior(prev, z)
        if noise is None:
            noise = torch.randn((n, cfg.token_dim), generator=generator, dtype=dtype, device=z.device)
        else:
            self._check("noise", noise, cfg.token_dim, n)
            noise = noise.to(dtype)
        x0 = (temperature * cfg.prior_std) * noise
        if mean is not None:
            x0 = x0 + mean

        cfg_scale = float(cfg_scale)
        if cfg_scale != 1.0:
            # CFG evaluates [cond; uncond] rows in one forward (see _guided_velocity).
            z = torch.cat([z, self.null_cond.expand_as(z)], dim=0)
        c_emb = self.cond_embed(z)  # constant over the trajectory: embed once
        nfe = 0
        was_training = self.training
        # Switching modes walks every submodule (a tenth of a millisecond, a tenth of a token's
        # sampling at a few steps): do it only when there is something to switch.
        if was_training:
            self.eval()
        try:
            if uses_fast_loop(solver, fast):
                t_emb = self._grid_time_embeddings(solver, steps, x0.device)
                weight, bias = self._fused_modulation()
                dts = grid_step_sizes(steps, x0.dtype, x0.device)
                # compile: the whole trajectory is one graph, so that its few-row ops fuse and Python
                # runs once per token rather than once per op (README, "The trajectory compiled").
                trajectory = _compiled_trajectory() if compile else FlowHead._trajectory
                out = trajectory(self, x0, c_emb, t_emb, weight, bias, solver, dts, cfg_scale)
                nfe = len(dts) * FAST_SOLVERS[solver]
            else:
                velocity = _compiled_guided_velocity() if compile else FlowHead._guided_velocity

                def fn(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
                    nonlocal nfe
                    nfe += 1
                    # t is the same for every row: embed one row and broadcast instead of N identical rows.
                    t_emb = self.time_embed(t.reshape(1).to(dtype))
                    return velocity(self, x, self._modulations(t_emb + c_emb), cfg_scale)

                out = integrate(fn, x0, solver=solver, steps=steps, rtol=rtol, atol=atol, fast=fast)
        finally:
            if was_training:
                self.train()
            self.nfe = nfe
        return out

    def _grid_time_embeddings(self, solver: str, steps: int, device: torch.device) -> torch.Tensor:
        """``(K, W)`` time embeddings of the K evaluation times of ``solver`` × ``steps``
        (:func:`~flow_omni.models.ode.stage_times`), kept between calls.

        They depend on the time MLP's weights, so the cache remembers which tensors, at which
        in-place version, it was computed from: an optimiser step, ``load_state_dict`` or ``.to()``
        gives a different key and a recomputation instead of stale embeddings.
        """
        dtype = self.input_proj.weight.dtype
        tensors = [*self.time_embed.parameters(), *self.time_embed.buffers()]
        weights = tuple((p.data_ptr(), p._version) for p in tensors)
        key = (solver, steps, dtype, device)
        hit = self._time_cache.get(key)
        if hit is not None and hit[0] == weights:
            return hit[1]
        t_emb = self.time_embed(stage_times(solver, steps, dtype=dtype, device=device))
        self._time_cache[key] = (weights, t_emb)
        return t_emb

    def _fused_modulation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every layer's adaLN ``Linear`` stacked into one: weight ``(M, W)`` and bias ``(M,)`` with
        ``M = (3 * depth + 2) * W``, the ``1 +`` of each scale folded into its bias. Kept between
        calls, keyed like :meth:`_grid_time_embeddings` on the tensors it was built from.

        One ``SiLU`` and one matmul then form all modulations of a set of times, where the layers
        would take one each plus a ``1 + scale`` per layer: at a few rows the dispatch of those ops
        costs about as much as their arithmetic.
        """
        linears = [b.adaLN_modulation[-1] for b in self.res_blocks] + [self.final_layer.adaLN_modulation[-1]]
        tensors = [t for lin in linears for t in (lin.weight, lin.bias)]
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
        hit = self._time_cache.get("modulation")
        if hit is not None and hit[0] == key:
            return hit[1]
        w = self.config.width
        biases = []
        for lin in linears:
            bias = lin.bias.detach().clone()
            bias[w : 2 * w] += 1  # the scale part: modulate() takes 1 + scale
            biases.append(bias)
        fused = (torch.cat([lin.weight.detach() for lin in linears]), torch.cat(biases))
        self._time_cache["modulation"] = (key, fused)
        return fused

    def _trajectory(
        self,
        x0: torch.Tensor,
        c_emb: torch.Tensor,
        t_emb: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        solver: str,
        dts: tuple[float, ...],
        cfg_scale: float,
    ) -> torch.Tensor:
        """The fixed-grid solution ``x(1) (N, D)`` from ``x0 (N, D)``, for embedded conditions ``c_emb
        (N or 2N, W)`` (with CFG: conditional rows, then unconditional), the grid's time embeddings
        ``t_emb (K, W)``, the fused adaLN ``weight``/``bias`` (:meth:`_fused_modulation`) and the
        grid's step sizes ``dts``. Everything that is looked up in caches is an argument, so that
        ``torch.compile`` can trace this in one graph."""
        mods = self._grid_modulations(t_emb, c_emb, weight, bias)

        def fn_at(k: int, x: torch.Tensor) -> torch.Tensor:
            # grid_loop asks for the evaluations in grid order, as mods yields them.
            return self._guided_velocity(x, next(mods), cfg_scale)

        return grid_loop(fn_at, x0, solver=solver, dts=dts)

    def _grid_modulations(
        self, t_emb: torch.Tensor, c_emb: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
    ) -> Iterator[list[tuple[torch.Tensor, ...]]]:
        """The :meth:`_modulations` of every evaluation time ``t_emb (K, W)`` for rows ``c_emb
        (R, W)``, in order: one ``(R, W)`` set per evaluation, through the fused adaLN ``weight`` and
        ``bias`` (:meth:`_fused_modulation`).

        They are formed for many times in one matmul (``y (k, R, W)`` through
        :meth:`_fused_modulation`), because at a few rows the adaLN layers are most of the head's
        weights and a matmul per evaluation would read them K times. ``_MODULATION_BUDGET`` bounds
        the elements formed at once, which matters only for large batches, where each chunk is a
        large matmul anyway.
        """
        k_total, rows, w = t_emb.shape[0], c_emb.shape[0], c_emb.shape[1]
        n_parts = 3 * len(self.res_blocks) + 2
        # All times at once unless that exceeds the budget: a comparison, not a division, so that one
        # compiled trajectory serves the row counts from 2 up to the budget instead of one per count.
        per_time = rows * w * n_parts
        chunk = k_total if per_time * k_total <= _MODULATION_BUDGET else max(1, _MODULATION_BUDGET // per_time)
        for start in range(0, k_total, chunk):
            y = t_emb[start : start + chunk, None] + c_emb[None]
            mods = nn.functional.linear(nn.functional.silu(y), weight, bias)  # (k, R, n_parts * W)
            for j in range(mods.shape[0]):
                # One select and one split per time: each is a view, which is all the loop needs.
                parts = mods[j].split(w, dim=-1)
                blocks = [parts[3 * i : 3 * i + 3] for i in range(len(self.res_blocks))]
                yield blocks + [parts[-2:]]


#: Elements of adaLN modulations the fixed-grid sampler forms at once (8 MB in float32).
_MODULATION_BUDGET = 1 << 21


#: Compiled versions of the trajectory that torch.compile may keep. Each solver, step count, CFG setting
#: and head shape compiles its own, and each of those up to three times for its row counts (the first
#: count; then any count from 2 rows up to the modulation budget, with dynamic shapes; and 1 row, which
#: torch specialises); above the budget every chunk size compiles anew. torch.compile's default of 8
#: would be reached by a few settings, after which it runs eager without a word.
_RECOMPILE_LIMIT = 64


@functools.cache
def _compiled_trajectory():
    """``torch.compile`` of :meth:`FlowHead._trajectory`, built on first use and shared by all heads
    (the head is an argument, so its weights are inputs of the compiled code, not constants in it),
    run with room for :data:`_RECOMPILE_LIMIT` compiled versions."""
    compiled = torch.compile(FlowHead._trajectory)

    def run(*args):
        with torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT):
            return compiled(*args)

    return run


@functools.cache
def _compiled_guided_velocity():
    """``torch.compile`` of :meth:`FlowHead._guided_velocity`, built on first use (compiling is the
    slow part) and shared by all heads: the head is an argument, so a head of the same structure
    reuses the compiled code and another shape or structure compiles anew."""
    return torch.compile(FlowHead._guided_velocity)
