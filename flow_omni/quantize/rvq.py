"""Residual vector quantisation: ``L`` k-means codebooks, each fitted on what the previous left.

Fitting is greedy, level by level (the classic RVQ, and how EnCodec initialises its codebooks):
level 0 is k-means on the tokens, level ``l`` is k-means on the residuals
``x - sum_{j<l} c_j[code_j]``. Consequences that the discrete baselines rely on:

* Prefix decoding is meaningful: ``decode(codes[..., :l])`` is the reconstruction of an
  ``l``-level RVQ, and the first ``l`` codebooks of an ``L``-level fit are exactly those of an
  ``l``-level fit with the same config (level ``l`` uses seed ``seed + l``), so one fit gives the
  whole error-versus-bitrate curve.
* ``ResidualVQ`` with ``num_levels=1`` is bit-for-bit the :class:`KMeansQuantizer` of the same
  config.

Shapes: tokens ``(…, D)`` ↔ codes ``(…, L)`` int64; ``codebooks`` is ``(L, K, D)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from flow_omni.audio.speech_tokens import ContinuousSpeechTokenizer
from flow_omni.errors import ConfigError
from flow_omni.quantize.base import Quantizer, TokenSource, VQConfig
from flow_omni.quantize.kmeans import _progress, collect_tokens, kmeans


@dataclasses.dataclass
class RVQConfig(VQConfig):
    """``num_levels`` codebooks of ``codebook_size`` codewords (``num_levels * log2(K)`` bits per token)."""

    num_levels: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_levels < 1:
            raise ConfigError(f"RVQConfig.num_levels must be >= 1, got {self.num_levels}")

    @property
    def levels(self) -> int:
        return self.num_levels


class ResidualVQ(Quantizer):
    """Greedy residual VQ: codes ``(…, L)``; ``decode`` sums the codewords of the levels given."""

    config_class = RVQConfig

    def __init__(self, config: RVQConfig | None = None, **overrides: Any) -> None:
        config = config or RVQConfig()
        super().__init__(config.replace(**overrides) if overrides else config)

    @torch.no_grad()
    def fit(
        self, tokens: TokenSource, *, progress: bool = True, tokenizer: ContinuousSpeechTokenizer | None = None
    ) -> ResidualVQ:
        """Fit level by level on tokens ``(…, D)`` or an iterable of ``(n_i, D)`` chunks; returns ``self``."""
        cfg = self._fit_config(tokenizer)
        x = collect_tokens(tokens, cfg.dim, max_tokens=cfg.max_tokens, seed=cfg.seed)
        books, mses, iters, reseeded = [], [], [], []
        residual = x
        desc = f"RVQ L={cfg.num_levels} K={cfg.codebook_size}"
        with _progress(cfg.iterations * cfg.num_levels, desc, progress) as bar:
            for level in range(cfg.num_levels):
                res = kmeans(
                    residual,
                    cfg.codebook_size,
                    iterations=cfg.iterations,
                    tol=cfg.tol,
                    init=cfg.init,
                    init_sample=cfg.init_sample,
                    batch_size=cfg.batch_size,
                    seed=cfg.seed + level,
                    bar=bar,
                    level=level,
                )
                books.append(res.centroids)
                mses.append(res.mse)
                iters.append(res.iterations)
                reseeded.append(res.reseeded)
                # The next level sees exactly what encode() leaves after this level.
                residual = residual - res.centroids[res.assign]
        self.config = cfg
        self.codebooks = torch.stack(books).to(self.codebooks.device)
        self.fitted_tokens.fill_(x.shape[0])
        self.fit_info = {"tokens": x.shape[0], "mse": mses, "iterations": iters, "reseeded": reseeded}
        return self
