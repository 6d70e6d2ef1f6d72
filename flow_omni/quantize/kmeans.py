"""K-means on continuous speech tokens, and :class:`KMeansQuantizer` (one codebook).

Discrete baselines (docs/design.md, "Speech tokens") need codes for the *same* normalised mel tokens the continuous
model uses, so the quantisers here are fitted by the library itself, on CPU, in float32:

* :func:`kmeans`: greedy k-means++ initialisation on a seeded subsample, then Lloyd iterations
  (or mini-batch updates for large fit sets) with the distance matrix computed in row chunks so
  that working memory beyond the fit set itself stays at about ``CHUNK_ELEMENTS`` floats (cap the
  fit set with ``max_tokens``). A codeword that loses all its points is re-seeded farthest-first
  at the worst-served points.
* :class:`KMeansQuantizer`: the ``L = 1`` case of the :class:`~flow_omni.quantize.base.Quantizer`
  base (codebooks, encode/decode, checkpoints).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import torch
from tqdm.auto import tqdm

from flow_omni.audio.speech_tokens import ContinuousSpeechTokenizer
from flow_omni.errors import ConfigError, MelShapeError
from flow_omni.quantize.base import (
    Quantizer,
    QuantizerError,
    TokenSource,
    VQConfig,
    _chunk_rows,
    check_tokens,
    nearest,
)


@dataclasses.dataclass
class KMeansConfig(VQConfig):
    """A single k-means codebook of ``codebook_size`` codewords over ``dim``-dim tokens."""


# ------------------------------------------------------------------------------- algorithm
def _kmeans_pp(x: torch.Tensor, k: int, sample: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ (Arthur & Vassilvitskii; ``2 + ln K`` trials per codeword, as scikit-learn)."""
    n = x.shape[0]
    if n > sample:
        x = x[torch.randperm(n, generator=gen)[:sample]]
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    centres = torch.empty(k, x.shape[1], dtype=x.dtype)
    centres[0] = x[int(torch.randint(n, (1,), generator=gen))]
    sq = (x * x).sum(-1)
    d2 = (sq - 2 * x @ centres[0] + centres[0] @ centres[0]).clamp_min(0).double()
    for i in range(1, k):
        total = float(d2.sum())
        if total <= 0:  # fewer distinct points than codewords: any point will do
            cand = torch.randint(n, (trials,), generator=gen)
        else:
            cand = torch.multinomial(d2 / total, trials, replacement=True, generator=gen)
        c = x[cand]  # (T, D)
        dc = (sq[None] - 2 * c @ x.T + (c * c).sum(-1, keepdim=True)).clamp_min(0).double()  # (T, n)
        pot = torch.minimum(d2[None], dc)
        best = int(pot.sum(-1).argmin())
        centres[i] = c[best]
        d2 = pot[best]
    return centres


def _reseed(x: torch.Tensor, c: torch.Tensor, dead: torch.Tensor, dmin: torch.Tensor) -> int:
    """Move idle codewords ``c[dead]`` (in place) to far points, farthest-first; return how many moved.

    The worst-served point gets the first idle codeword; distances are then updated as if it
    were live, so the next one goes to another far region rather than to the same cluster.
    A codeword stays idle when every point already sits on a codeword (fewer distinct points
    than ``K``): there is nothing to gain by moving it.
    """
    dmin = dmin.clone()
    sq = (x * x).sum(-1)
    moved = 0
    for j in dead.tolist():
        i = int(dmin.argmax())
        if not float(dmin[i]) > 0:
            break
        c[j] = x[i]
        moved += 1
        dmin = torch.minimum(dmin, (sq - 2 * (x @ x[i]) + sq[i]).clamp_min(0))
        dmin[i] = 0  # exact, whatever the rounding of the expansion above
    return moved


def _update_bar(bar: Any, **postfix: Any) -> None:
    if bar is not None:
        bar.update(1)
        bar.set_postfix(postfix, refresh=False)


@dataclasses.dataclass
class KMeansResult:
    """What :func:`kmeans` returns: codebook ``(K, D)``, final assignment ``(N,)`` and fit facts."""

    centroids: torch.Tensor
    assign: torch.Tensor
    mse: float  # mean squared error per element at the final codebook
    iterations: int  # passes run (early stop when the MSE stalls)
    reseeded: int  # dead codewords re-seeded over the whole fit


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    iterations: int = 50,
    tol: float = 1e-4,
    init: str = "kmeans++",
    init_sample: int = 20000,
    batch_size: int = 0,
    seed: int = 0,
    bar: Any = None,
    level: int | None = None,
) -> KMeansResult:
    """Fit ``k`` centroids to ``x (N, D)`` float32 (see :class:`VQConfig` for the options).

    ``bar`` is an optional tqdm bar advanced once per pass (shared across RVQ levels).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise MelShapeError(f"kmeans: expected a float tensor (N, D), got {getattr(x, 'shape', type(x).__name__)}")
    if init not in ("kmeans++", "random"):
        raise ConfigError(f"kmeans: init must be 'kmeans++' or 'random', got {init!r}")
    n, dim = x.shape
    if n < k:
        raise QuantizerError(f"k-means needs at least codebook_size={k} tokens to fit, got {n}")
    gen = torch.Generator().manual_seed(seed)
    if init == "kmeans++":
        c = _kmeans_pp(x, k, max(init_sample, k), gen)
    else:
        c = x[torch.randperm(n, generator=gen)[:k]].clone()
    tag = {} if level is None else {"level": level}
    prev = math.inf
    reseeded = 0
    done = 0
    counts_total = torch.zeros(k, dtype=torch.float64)
    for _ in range(iterations):
        done += 1
        dmin = torch.empty(n, dtype=x.dtype)
        counts = torch.zeros(k, dtype=torch.float64)
        if batch_size == 0:  # Lloyd: assign everything, then move every centroid to its mean
            sums = torch.zeros(k, dim, dtype=torch.float64)
            step = _chunk_rows(k, dim)
            sq_norms = (c * c).sum(-1)
            for s in range(0, n, step):
                xc = x[s : s + step]
                idx, dmin[s : s + step] = nearest(xc, c, sq_norms)
                sums.index_add_(0, idx, xc.double())
                counts += torch.bincount(idx, minlength=k).double()
            live = counts > 0
            c = c.clone()
            c[live] = (sums[live] / counts[live, None]).to(c.dtype)
        else:  # mini-batch: per-centroid learning rate 1 / (points seen so far)
            perm = torch.randperm(n, generator=gen)
            c = c.clone()
            for s in range(0, n, batch_size):
                rows = perm[s : s + batch_size]
                xb = x[rows]
                idx, dmin[rows] = nearest(xb, c)
                nb = torch.bincount(idx, minlength=k).double()
                sums = torch.zeros(k, dim, dtype=torch.float64).index_add_(0, idx, xb.double())
                counts += nb
                counts_total += nb
                hit = nb > 0
                lr = (1.0 / counts_total[hit])[:, None]
                c[hit] = (c[hit].double() + lr * (sums[hit] - nb[hit, None] * c[hit].double())).to(c.dtype)
        mse = float(dmin.double().sum()) / (n * dim)
        dead = (counts == 0).nonzero().flatten()
        moved = _reseed(x, c, dead, dmin) if len(dead) else 0
        counts_total[dead] = 0
        reseeded += moved
        _update_bar(bar, mse=f"{mse:.4f}", **tag)
        if moved == 0 and math.isfinite(prev) and prev - mse <= tol * prev:
            break
        prev = mse
    if bar is not None and done < iterations:
        bar.update(iterations - done)  # early stop: keep the bar's total honest
    assign, dmin = nearest(x, c)
    mse = float(dmin.double().sum()) / (n * dim)
    return KMeansResult(c.contiguous(), assign, mse, done, reseeded)


# --------------------------------------------------------------------------- data ingestion
def collect_tokens(tokens: TokenSource, dim: int, *, max_tokens: int = 0, seed: int = 0) -> torch.Tensor:
    """Tokens ``(…, D)`` or an iterable of ``(…, D)`` chunks → one float32 ``(N, D)`` fit set.

    With ``max_tokens > 0`` a uniform sample without replacement is kept while streaming
    (a random key per row, the ``max_tokens`` largest kept), so memory stays below
    ``2 * max_tokens`` rows for a corpus of any size; kept rows stay in corpus order.
    """
    single = isinstance(tokens, torch.Tensor)
    chunks: Iterable[torch.Tensor] = [tokens] if single else tokens
    gen = torch.Generator().manual_seed(seed + 7919)
    rows: list[torch.Tensor] = []
    keys: list[torch.Tensor] = []
    buffered = 0
    for i, chunk in enumerate(chunks):
        flat = check_tokens(chunk, dim, where="tokens" if single else f"tokens chunk {i}").reshape(-1, dim).float()
        rows.append(flat)
        buffered += flat.shape[0]
        if max_tokens:
            keys.append(torch.rand(flat.shape[0], generator=gen))
            if buffered >= 2 * max_tokens:  # compact: amortised O(1) copies per row
                rows, keys = _keep_top(rows, keys, max_tokens)
                buffered = max_tokens
    if max_tokens and buffered > max_tokens:
        rows, keys = _keep_top(rows, keys, max_tokens)
    if buffered == 0:
        raise QuantizerError("no tokens to fit on (empty tensor or iterable)")
    return rows[0] if len(rows) == 1 else torch.cat(rows)


def _keep_top(
    rows: list[torch.Tensor], keys: list[torch.Tensor], k: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    all_keys = torch.cat(keys)
    sel = all_keys.topk(k).indices.sort().values
    return [torch.cat(rows)[sel]], [all_keys[sel]]


def _progress(total: int, desc: str, progress: bool) -> Any:
    return tqdm(total=total, desc=desc, unit="pass", disable=not progress)


class KMeansQuantizer(Quantizer):
    """One k-means codebook: tokens ``(…, D)`` → codes ``(…, 1)`` (the level axis is kept)."""

    config_class = KMeansConfig

    def __init__(self, config: KMeansConfig | None = None, **overrides: Any) -> None:
        config = config or KMeansConfig()
        super().__init__(config.replace(**overrides) if overrides else config)

    @torch.no_grad()
    def fit(
        self, tokens: TokenSource, *, progress: bool = True, tokenizer: ContinuousSpeechTokenizer | None = None
    ) -> KMeansQuantizer:
        """Fit on tokens ``(…, D)`` or an iterable of ``(n_i, D)`` chunks; returns ``self``.

        ``tokenizer`` (optional) records the token space in the config, so that mel-domain
        metrics and decoders can later check that codes and tokenizer belong together.
        """
        cfg = self._fit_config(tokenizer)
        x = collect_tokens(tokens, cfg.dim, max_tokens=cfg.max_tokens, seed=cfg.seed)
        with _progress(cfg.iterations, f"k-means K={cfg.codebook_size}", progress) as bar:
            res = kmeans(
                x,
                cfg.codebook_size,
                iterations=cfg.iterations,
                tol=cfg.tol,
                init=cfg.init,
                init_sample=cfg.init_sample,
                batch_size=cfg.batch_size,
                seed=cfg.seed,
                bar=bar,
            )
        self.config = cfg
        self.codebooks = res.centroids[None].to(self.codebooks.device)
        self.fitted_tokens.fill_(x.shape[0])
        self.fit_info = {
            "tokens": x.shape[0],
            "mse": [res.mse],
            "iterations": [res.iterations],
            "reseeded": [res.reseeded],
        }
        return self
