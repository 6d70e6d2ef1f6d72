"""Tests of the flow-matching head (flow_omni/models/flow_head.py) and its ODE solvers.

The central test trains a tiny head on a conditional two-mode Gaussian mixture in 64 dims and
checks what it samples against the known mixture: mode weights, per-mode means and variances.
It runs once per session (module fixture) and its trained head also serves the tests that need a
non-trivial velocity field (a fresh head predicts v = 0 everywhere because of its zero init).
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from flow_omni.errors import ConfigError, MelShapeError
from flow_omni.models import SOLVERS, FlowHead, FlowHeadConfig, integrate
from flow_omni.models import flow_head as flow_head_module

# ---------------------------------------------------------------------------- the mixture task
D, C, K = 64, 16, 3  # token dims, condition dims, number of conditions
SIGMA_LEVELS = (0.2, 0.35, 0.5)  # per-condition std scale; per-dim stds vary ±25% around it


def _mixture(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(K, C, generator=g)
    means = torch.randn(K, 2, D, generator=g)  # modes ≈ 11 apart vs stds ≤ 0.63: well separated
    stds = torch.tensor(SIGMA_LEVELS)[:, None] * (0.75 + 0.5 * torch.rand(K, D, generator=g))
    return zs, means, stds


def _draw(zs, means, stds, n, gen):
    c = torch.randint(K, (n,), generator=gen)
    m = torch.randint(2, (n,), generator=gen)  # equal mode weights
    return means[c, m] + stds[c] * torch.randn(n, D, generator=gen), zs[c]


@pytest.fixture(scope="module")
def mixture():
    return _mixture()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread for this module, restored afterwards. Measured on the shared 2-core
    machine: with other jobs running, 2 threads made these tiny matmuls 3-10x slower (the threads
    wait for each other at every op) while 1 thread was as fast as 2 on an idle machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(mixture):
    return _train(mixture)


def _train(mixture, seed: int = 0) -> FlowHead:
    """A 0.1 M-parameter head after 600 AdamW steps (≈ 12 s on one core)."""
    zs, means, stds = mixture
    torch.manual_seed(seed)
    head = FlowHead(FlowHeadConfig(token_dim=D, cond_dim=C, width=96, depth=2, freq_dim=64, repeats=4))
    steps, lr = 600, 4e-3
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed + 1)
    head.train()
    for _ in range(steps):
        x, z = _draw(zs, means, stds, 192, gen)
        loss = head.loss(x, z, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return head.eval()


def _perturbed(head: FlowHead, seed: int = 0, scale: float = 0.05) -> FlowHead:
    """A copy whose zero-initialised layers are made non-zero, so the field is not trivially 0."""
    head = copy.deepcopy(head)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return head


def _tiny(**kw) -> FlowHead:
    cfg = dict(token_dim=8, cond_dim=4, width=32, depth=2, freq_dim=16)
    cfg.update(kw)
    torch.manual_seed(0)
    return FlowHead(FlowHeadConfig(**cfg))


# ------------------------------------------------------------------------------ real behaviour
def test_head_learns_conditional_two_mode_mixture(trained, mixture):
    zs, means, stds = mixture
    n = 2000
    for c in range(K):
        s = trained.sample(zs[c].expand(n, C), steps=32, solver="euler", generator=torch.Generator().manual_seed(c))
        assert torch.isfinite(s).all()
        assign = torch.cdist(s, means[c]).argmin(dim=1)
        frac = (assign == 0).float().mean().item()
        # Tolerances below: "measured" = worst case over 4 (mixture, training) seeds. An 80-step
        # head fails them (mean error 0.8 σ). Mode weight: measured |frac - 0.5| <= 0.03;
        # binomial noise alone is ±0.011 (1σ) at n=2000.
        assert abs(frac - 0.5) < 0.07, f"condition {c}: mode 0 got {frac:.3f} of the samples, want 0.5"
        for m in range(2):
            got = s[assign == m]
            # RMS over dims of the mean error, in units of this condition's mean std. Measured
            # <= 0.08 (sampling noise alone ≈ 0.03); a head that ignored z would be off by ~1.4/σ.
            mean_err = ((got.mean(0) - means[c, m]) ** 2).mean().sqrt() / stds[c].mean()
            assert mean_err < 0.15, f"condition {c} mode {m}: mean error {mean_err:.3f} σ"
            # Total variance ratio (mean over dims of sample var / true var): measured 0.91-1.00.
            # The conditions' variances differ 6x, so this also shows the head uses σ_c per condition.
            ratio = (got.var(0) / stds[c] ** 2).mean().item()
            assert 0.8 < ratio < 1.25, f"condition {c} mode {m}: variance ratio {ratio:.3f}"
            # Per-dim ratios are noisier (extremes 0.57-1.69); their median measured 0.81-1.04.
            median = (got.var(0) / stds[c] ** 2).median().item()
            assert 0.7 < median < 1.4, f"condition {c} mode {m}: median per-dim variance ratio {median:.3f}"


def test_euler_error_falls_with_more_steps(trained, mixture):
    zs, _, _ = mixture
    z = zs.repeat_interleave(16, dim=0)  # (48, C)
    noise = torch.randn(z.shape[0], D, generator=torch.Generator().manual_seed(5))
    # Reference in float64 so that rtol=atol=1e-7 is meaningful (float32 eps is 1.2e-7).
    ref_head = copy.deepcopy(trained).double()
    ref = ref_head.sample(z.double(), solver="dopri5", rtol=1e-7, atol=1e-7, noise=noise.double()).float()
    errs = []
    for steps in (2, 8, 32):
        out = trained.sample(z, steps=steps, solver="euler", noise=noise)
        errs.append((out - ref).pow(2).mean().sqrt().item())
    # Measured RMS errors 0.49 / 0.12 / 0.023 (dopri5 needed ~1100 evaluations at this tolerance).
    assert errs[0] > errs[1] > errs[2], f"Euler RMS errors vs dopri5 for 2/8/32 steps: {errs}"
    # First order: 4x the steps should cut the error by roughly 4x; demand at least 2x.
    assert errs[2] < errs[1] / 2, errs
    rk4 = trained.sample(z, steps=8, solver="rk4", noise=noise)  # measured 0.0012
    assert (rk4 - ref).pow(2).mean().sqrt().item() < errs[2], "rk4 with 8 steps should beat euler with 32"


def _with_previous_prior(head: FlowHead) -> FlowHead:
    """The trained field with FELLE's prior centred on the previous token (what the presets use)."""
    head = copy.deepcopy(head)
    head.config = dataclasses.replace(head.config, prior="previous", prior_std=0.5)
    return head


@pytest.mark.parametrize("solver", ["euler", "midpoint", "heun"])
@pytest.mark.parametrize("prior", ["gaussian", "previous"])
def test_fast_sampler_equals_odeint(trained, mixture, solver, prior):
    """The fixed-grid sampler (cached time embeddings, modulations of the whole grid at once) is the
    ODE torchdiffeq integrates: same updates at the same times, equal output up to float rounding."""
    zs, means, _ = mixture
    head = trained if prior == "gaussian" else _with_previous_prior(trained)
    z = zs.repeat_interleave(4, dim=0)  # (12, C)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(z.shape[0], D, generator=g)
    prev = means[:, 0].repeat_interleave(4, dim=0) + 0.3 * torch.randn(z.shape[0], D, generator=g)
    for steps in (1, 3, 7):
        for temperature in (0.0, 0.8):
            for cfg_scale in (1.0, 2.5):
                kw = dict(steps=steps, solver=solver, temperature=temperature, cfg_scale=cfg_scale, noise=noise)
                fast = head.sample(z, prev, **kw)
                nfe = head.nfe
                ref = head.sample(z, prev, fast=False, **kw)
                assert nfe == head.nfe == steps * SOLVERS[solver]
                err = (fast - ref).abs().max().item()
                assert err < 1e-5, f"{solver} {steps} steps, T={temperature}, cfg {cfg_scale}: {err:.2e}"


def test_fast_sampler_is_the_default_and_skips_torchdiffeq(trained, mixture, monkeypatch):
    import torchdiffeq

    zs, _, _ = mixture

    def refuse(*args, **kwargs):
        raise AssertionError("the default fixed-grid path called torchdiffeq.odeint")

    monkeypatch.setattr(torchdiffeq, "odeint", refuse)
    for solver in ("euler", "midpoint", "heun"):
        trained.sample(zs, steps=2, solver=solver, generator=torch.Generator().manual_seed(0))
    with pytest.raises(AssertionError, match="called torchdiffeq"):
        trained.sample(zs, steps=2, solver="rk4")  # rk4 has no hand-written loop


def test_fast_sampler_in_chunks_of_the_grid(trained, mixture, monkeypatch):
    """Large batches form the grid's modulations a few times at a time; the result is the same."""
    zs, _, _ = mixture
    noise = torch.randn(3, D, generator=torch.Generator().manual_seed(4))
    whole = trained.sample(zs, steps=5, solver="heun", noise=noise, cfg_scale=2.0)
    monkeypatch.setattr(flow_head_module, "_MODULATION_BUDGET", 1)  # one evaluation time per chunk
    chunked = trained.sample(zs, steps=5, solver="heun", noise=noise, cfg_scale=2.0)
    assert trained.nfe == 10
    assert (whole - chunked).abs().max().item() < 1e-5


def test_cached_time_embeddings_follow_the_weights(trained, mixture):
    """The grid's time embeddings and the fused adaLN weights are kept between calls; changed
    weights must not reuse them."""
    zs, _, _ = mixture
    head = copy.deepcopy(trained)
    noise = torch.randn(3, D, generator=torch.Generator().manual_seed(5))

    def agrees_with_reference() -> bool:
        fast = head.sample(zs, steps=4, solver="midpoint", noise=noise)
        ref = head.sample(zs, steps=4, solver="midpoint", noise=noise, fast=False)
        return (fast - ref).abs().max().item() < 1e-5

    assert agrees_with_reference()  # fills the cache
    opt = torch.optim.SGD(head.time_embed.parameters(), lr=0.5)
    head.time_embed.mlp[2].weight.grad = torch.randn_like(head.time_embed.mlp[2].weight)
    opt.step()  # an in-place update of the time MLP
    assert agrees_with_reference()
    for layer in (head.res_blocks[1].adaLN_modulation[-1], head.final_layer.adaLN_modulation[-1]):
        before = head.sample(zs, steps=4, solver="midpoint", noise=noise)
        with torch.no_grad():
            layer.bias.add_(0.3)  # in place: same tensor, new version
        assert not torch.allclose(before, head.sample(zs, steps=4, solver="midpoint", noise=noise))
        assert agrees_with_reference()
    head.load_state_dict(_perturbed(trained, seed=1).state_dict())
    assert agrees_with_reference()
    double = head.double()  # new tensors and a new dtype
    z64, noise64 = zs.double(), noise.double()
    fast = double.sample(z64, steps=4, solver="midpoint", noise=noise64)
    ref = double.sample(z64, steps=4, solver="midpoint", noise=noise64, fast=False)
    assert fast.dtype == torch.float64 and (fast - ref).abs().max().item() < 1e-12


def test_sample_keeps_the_training_mode(trained, mixture):
    zs, _, _ = mixture
    head = copy.deepcopy(trained)
    noise = torch.randn(3, D, generator=torch.Generator().manual_seed(7))
    for training in (True, False):
        head.train(training)
        out = head.sample(zs, steps=3, noise=noise)
        assert all(m.training is training for m in head.modules())
        assert torch.equal(out, trained.sample(zs, steps=3, noise=noise))


def test_compiled_sampler_equals_eager(trained, mixture):
    """``compile=True`` runs the whole fixed-grid trajectory through torch.compile (inductor, which
    needs a C compiler): same samples as eager, for CFG too, for a second head of the same shape (its
    weights must not be baked into the first head's compiled code) and for other row counts (the
    shapes a batch has once some of its rows have stopped speaking, down to one). It fails if torch
    fell back to eager: graphs must have been compiled, and hitting the recompile limit raises."""
    from torch._dynamo.utils import counters

    zs, _, _ = mixture
    other = _perturbed(trained, seed=2)
    noise = torch.randn(3, D, generator=torch.Generator().manual_seed(6))
    # Else the second head would prove nothing.
    assert not torch.allclose(trained.sample(zs, steps=3, noise=noise), other.sample(zs, steps=3, noise=noise))
    graphs = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        for head in (trained, other):
            for solver, cfg_scale in (("euler", 1.0), ("heun", 2.0)):
                kw = dict(steps=3, solver=solver, noise=noise, cfg_scale=cfg_scale)
                eager = head.sample(zs, **kw)
                compiled = head.sample(zs, compile=True, **kw)
                assert (compiled - eager).abs().max().item() < 1e-5, (solver, cfg_scale)
        for rows in (2, 1):
            fewer = dict(steps=3, noise=noise[:rows])
            compiled = trained.sample(zs[:rows], compile=True, **fewer)
            assert (compiled - trained.sample(zs[:rows], **fewer)).abs().max().item() < 1e-5, rows
    assert counters["stats"]["unique_graphs"] > graphs  # compiled, not eager under another name


def test_loss_overfits_fixed_batch():
    head = _tiny()
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(16, 8, generator=g), torch.randn(16, 4, generator=g)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)

    def fixed_loss():  # same (t, x0) draws each time, so the numbers are comparable
        return head.loss(x, z, generator=torch.Generator().manual_seed(123))

    with torch.no_grad():
        first = fixed_loss().item()
    for _ in range(300):
        loss = head.loss(x, z)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = fixed_loss().item()
    # Distinct z per row makes x1 a function of (x_t, t, z), so the loss can approach 0.
    assert last < 0.25 * first, (first, last)


def test_cfg_dropout_training_and_guided_sampling():
    head = _tiny(cfg_dropout=0.5)
    null_before = head.null_cond.detach().clone()
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(32, 8, generator=g), torch.randn(32, 4, generator=g)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(30):
        loss = head.loss(x, z, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(head.null_cond.detach(), null_before), "null_cond was never trained"
    # Dropout is a training-time thing: in eval mode the loss never touches null_cond.
    head.eval()
    head.zero_grad()
    head.loss(x, z, generator=torch.Generator().manual_seed(1)).backward()
    assert head.null_cond.grad is None or not head.null_cond.grad.any()
    head.train()
    plain = head.sample(z, generator=torch.Generator().manual_seed(2))
    guided = head.sample(z, cfg_scale=2.0, generator=torch.Generator().manual_seed(2))
    assert torch.isfinite(guided).all() and not torch.allclose(plain, guided)
    assert head.training, "sample() must restore training mode"


def test_cfg_formula():
    head = _perturbed(_tiny())
    g = torch.Generator().manual_seed(0)
    z, noise = torch.randn(6, 4, generator=g), torch.randn(6, 8, generator=g)
    base = head.sample(z, steps=3, noise=noise)
    assert torch.equal(head.sample(z, steps=3, noise=noise, cfg_scale=1.0), base)
    # cfg_scale=0 is the unconditional model: z replaced by null_cond.
    uncond = head.sample(head.null_cond.detach().expand(6, 4), steps=3, noise=noise)
    assert torch.allclose(head.sample(z, steps=3, noise=noise, cfg_scale=0.0), uncond, atol=1e-6)
    # One Euler step from x0: x0 + v_u + s (v_c - v_u).
    with torch.no_grad():
        v_c = head.velocity(noise, 0.0, z)
        v_u = head.velocity(noise, 0.0, head.null_cond.expand(6, 4))
    want = noise + v_u + 3.0 * (v_c - v_u)
    assert torch.allclose(head.sample(z, steps=1, noise=noise, cfg_scale=3.0), want, atol=1e-5)


def test_temperature_zero_is_deterministic_prior_mean_path():
    head = _perturbed(_tiny())
    z = torch.randn(5, 4)
    a = head.sample(z, temperature=0.0, generator=torch.Generator().manual_seed(0))
    b = head.sample(z, temperature=0.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.equal(a, head.sample(z, noise=torch.zeros(5, 8)))  # the path from the prior mean
    hot = head.sample(z, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(a, hot)


def test_previous_prior_requires_prev_and_centres_on_it():
    head = _tiny(prior="previous", prior_std=0.1)
    z = torch.randn(4000, 4)
    prev = torch.randn(4000, 8)
    with pytest.raises(ValueError, match="prior='previous' needs prev"):
        head.sample(z)
    with pytest.raises(ValueError, match="needs prev"):
        head.loss(torch.randn(4000, 8), z)
    # A fresh head has v = 0, so a sample is exactly its starting point x0 ~ N(prev, 0.1² I).
    assert torch.equal(head.sample(z, prev, temperature=0.0), prev)
    out = head.sample(z, prev, generator=torch.Generator().manual_seed(0))
    assert abs((out - prev).std().item() - 0.1) < 0.005
    loss = head.loss(torch.randn(4000, 8), z, prev=torch.zeros(4000, 8))  # zeros: rows with no previous
    assert torch.isfinite(loss) and loss.requires_grad


def test_seeded_sample_is_reproducible():
    head = _perturbed(_tiny())
    z = torch.randn(7, 4)
    for solver in ("euler", "rk4", "dopri5"):
        a = head.sample(z, solver=solver, generator=torch.Generator().manual_seed(11))
        b = head.sample(z, solver=solver, generator=torch.Generator().manual_seed(11))
        c = head.sample(z, solver=solver, generator=torch.Generator().manual_seed(12))
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert not a.requires_grad


def test_nfe_counts():
    head = _perturbed(_tiny())
    z = torch.randn(3, 4)
    for solver, per_step in (("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)):
        for fast in (None, False):
            head.sample(z, steps=5, solver=solver, fast=fast)
            assert head.nfe == 5 * per_step, (solver, fast)
    head.sample(z, steps=5, solver="euler", cfg_scale=2.0)
    assert head.nfe == 5  # cond + uncond in one batched forward
    head.sample(z, solver="dopri5")
    assert head.nfe > 0


def test_mask_excludes_rows():
    head = _perturbed(_tiny())
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(6, 8, generator=g), torch.randn(6, 4, generator=g)
    mask = torch.tensor([True, True, False, True, False, True])
    garbage = x.clone()
    garbage[~mask] = 1e4
    a = head.loss(x, z, mask=mask, generator=torch.Generator().manual_seed(1))
    b = head.loss(garbage, z, mask=mask, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(a, b)
    empty = head.loss(x, z, mask=torch.zeros(6, dtype=torch.bool))
    assert empty.item() == 0.0 and empty.requires_grad


def test_fresh_head_predicts_zero_velocity():
    head = _tiny()
    v = head.velocity(torch.randn(5, 8), torch.rand(5), torch.randn(5, 4))
    assert v.shape == (5, 8) and torch.equal(v, torch.zeros(5, 8))


def test_bad_inputs_give_specific_errors():
    head = _tiny()
    z = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"unknown ODE solver 'heun2'.*'euler', 'midpoint', 'heun', 'rk4', 'dopri5'"):
        head.sample(z, solver="heun2")
    with pytest.raises(MelShapeError, match=r"z must have shape \(N, 4\), got \(3, 5\)"):
        head.sample(torch.randn(3, 5))
    with pytest.raises(MelShapeError, match=r"got \(4,\)"):
        head.sample(torch.randn(4))
    with pytest.raises(MelShapeError, match=r"z must have shape \(2, 4\), got \(3, 4\)"):
        head.loss(torch.randn(2, 8), z)
    with pytest.raises(MelShapeError, match=r"target must have shape \(N, 8\), got \(3, 9\)"):
        head.loss(torch.randn(3, 9), z)
    with pytest.raises(MelShapeError, match="mask must have shape"):
        head.loss(torch.randn(3, 8), z, mask=torch.ones(4))
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        head.sample(z, steps=0)
    with pytest.raises(ValueError, match="temperature"):
        head.sample(z, temperature=-1.0)
    with pytest.raises(ValueError, match=r"fast=True is only available for solvers \['euler', 'midpoint', 'heun'\]"):
        head.sample(z, solver="rk4", fast=True)
    with pytest.raises(ValueError, match="rtol must be a positive number"):
        head.sample(z, solver="dopri5", rtol=0.0)
    with pytest.raises(MelShapeError, match=r"noise must have shape \(3, 8\)"):
        head.sample(z, noise=torch.randn(3, 7))
    with pytest.raises(MelShapeError, match=r"t must be a scalar or shape \(3,\)"):
        head.velocity(torch.randn(3, 8), torch.rand(2), z)


def test_config_validation_and_round_trip():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'widht' \(did you mean 'width'\?\)"):
        FlowHeadConfig.from_dict({"token_dim": 8, "cond_dim": 4, "widht": 3})
    with pytest.raises(ConfigError, match="prior must be 'gaussian' or 'previous'"):
        FlowHeadConfig(token_dim=8, cond_dim=4, prior="uniform")
    with pytest.raises(ConfigError, match="cfg_dropout must be in"):
        FlowHeadConfig(token_dim=8, cond_dim=4, cfg_dropout=1.0)
    with pytest.raises(ConfigError, match="freq_dim must be even"):
        FlowHeadConfig(token_dim=8, cond_dim=4, freq_dim=7)
    with pytest.raises(ConfigError, match="token_dim must be an integer >= 1"):
        FlowHeadConfig(token_dim=0, cond_dim=4)
    with pytest.raises(ConfigError, match="prior_std must be a positive number"):
        FlowHeadConfig(token_dim=8, cond_dim=4, prior_std=0.0)
    with pytest.raises(ConfigError, match="time_scale must be a positive number"):
        FlowHeadConfig(token_dim=8, cond_dim=4, time_scale=-1.0)
    with pytest.raises(ConfigError, match=r"own_previous must be a fraction in \[0, 1\], got 1.5"):
        FlowHeadConfig(token_dim=8, cond_dim=4, prior="previous", own_previous=1.5)
    with pytest.raises(ConfigError, match="own_previous needs prior='previous'.*got prior='gaussian'"):
        FlowHeadConfig(token_dim=8, cond_dim=4, own_previous=0.5)
    with pytest.raises(ConfigError, match="own_previous_rounds must be an integer >= 1"):
        FlowHeadConfig(token_dim=8, cond_dim=4, prior="previous", own_previous=0.5, own_previous_rounds=0)
    cfg = FlowHeadConfig(
        token_dim=8, cond_dim=4, width=32, prior="previous", prior_std=0.1, cfg_dropout=0.1, own_previous=0.25
    )
    assert FlowHeadConfig.from_json(cfg.to_json()) == cfg
    head, again = _tiny(), _tiny()
    again.load_state_dict(head.state_dict())
    assert set(SOLVERS) == {"euler", "midpoint", "heun", "rk4", "dopri5"}


def test_integrate_solves_a_known_ode():
    # dx/dt = -x  ⇒  x(1) = x0 / e; checks the solver plumbing independently of the network.
    x0 = torch.randn(4, 3, dtype=torch.float64)
    exact = x0 * torch.exp(torch.tensor(-1.0, dtype=torch.float64))
    cases = (("euler", 1000, 1e-3), ("midpoint", 50, 1e-4), ("heun", 50, 1e-4), ("rk4", 10, 1e-5), ("dopri5", 1, 1e-7))
    for solver, steps, tol in cases:
        for fast in (None, False):  # the hand-written loop where there is one, and odeint
            out = integrate(lambda t, x: -x, x0, solver=solver, steps=steps, rtol=1e-9, atol=1e-9, fast=fast)
            assert (out - exact).abs().max().item() < tol, (solver, fast)
    # A time-dependent field checks the stage times: dx/dt = 2t ⇒ x(1) = x0 + 1, which midpoint and
    # heun integrate exactly from one step, while Euler's one step (at t=0) adds nothing.
    for solver, want in (("euler", x0), ("midpoint", x0 + 1), ("heun", x0 + 1)):
        for fast in (None, False):
            out = integrate(lambda t, x: 2 * t * torch.ones_like(x), x0, solver=solver, steps=1, fast=fast)
            assert (out - want).abs().max().item() < 1e-12, (solver, fast)
