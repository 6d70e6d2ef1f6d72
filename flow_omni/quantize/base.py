"""The base every quantiser shares: :class:`VQConfig`, :class:`Quantizer` and nearest-codeword search.

* :class:`Quantizer`: codebooks ``(L, K, D)``; greedy residual encoding (level ``l`` quantises
  what levels ``< l`` left), decoding by summing codewords, checks with clear errors, and
  ``save_pretrained`` / ``from_pretrained`` through :mod:`flow_omni.checkpoint`. Subclasses
  (:class:`~flow_omni.quantize.kmeans.KMeansQuantizer`, :class:`~flow_omni.quantize.rvq.ResidualVQ`)
  add ``fit``.
* :func:`nearest`: the nearest codeword of each row, with the distance matrix computed in row chunks
  so that working memory stays at about ``CHUNK_ELEMENTS`` floats for any number of tokens.

Codes always keep a level axis: ``(…, D)`` tokens ↔ ``(…, L)`` int64 codes, so k-means (``L = 1``)
and residual VQ share one API and a model can embed codes as a sum over levels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from flow_omni.audio.speech_tokens import ContinuousSpeechTokenizer, SpeechTokenConfig
from flow_omni.checkpoint import load_checkpoint, load_state_strict, save_checkpoint
from flow_omni.config import Config
from flow_omni.errors import CheckpointError, ConfigError, FlowOmniError, MelShapeError

#: Elements in one chunk of the (rows, max(K, D)) work arrays (16 MiB in float32): bounds memory for any N.
CHUNK_ELEMENTS = 1 << 22

TokenSource = torch.Tensor | Iterable[torch.Tensor]


class QuantizerError(FlowOmniError, ValueError):
    """Codes out of range or with the wrong level count, an unfitted quantiser, too few tokens."""


# ---------------------------------------------------------------------------------- configs
@dataclasses.dataclass
class VQConfig(Config):
    """Fields shared by every quantiser config.

    ``iterations`` counts passes over the fit set: a Lloyd step (``batch_size = 0``) or one
    shuffled epoch of mini-batch updates (``batch_size > 0``, Sculley 2010), so the cost per
    iteration is the same in both modes; mini-batch converges in fewer passes on large sets.
    """

    dim: int = 400  # token size r * n_mels
    codebook_size: int = 256  # K
    iterations: int = 50
    tol: float = 1e-4  # stop when the MSE improves by less than this fraction in one pass
    init: Literal["kmeans++", "random"] = "kmeans++"
    init_sample: int = 20000  # rows k-means++ runs on (at least K)
    batch_size: int = 0  # 0 = full-batch Lloyd; > 0 = mini-batch k-means with this batch
    max_tokens: int = 0  # 0 = fit on every token; else a seeded uniform subsample of this size
    seed: int = 0
    token_space: SpeechTokenConfig | None = None  # the token space the codebooks were fitted in

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field in ("dim", "codebook_size", "iterations", "init_sample"):
            if getattr(self, field) < 1:
                raise ConfigError(f"{name}.{field} must be >= 1, got {getattr(self, field)}")
        for field in ("batch_size", "max_tokens"):
            if getattr(self, field) < 0:
                raise ConfigError(f"{name}.{field} must be >= 0, got {getattr(self, field)}")
        if self.init not in ("kmeans++", "random"):
            raise ConfigError(f"{name}.init must be 'kmeans++' or 'random', got {self.init!r}")
        if not self.tol >= 0:
            raise ConfigError(f"{name}.tol must be >= 0, got {self.tol}")
        if self.max_tokens and self.max_tokens < self.codebook_size:
            raise ConfigError(
                f"{name}.max_tokens={self.max_tokens} keeps fewer tokens than codebook_size={self.codebook_size}"
            )
        if self.token_space is not None and self.token_space.token_dim != self.dim:
            raise ConfigError(
                f"{name}: dim={self.dim} but token_space has r={self.token_space.r} x "
                f"{self.token_space.mel.n_mels} bins = {self.token_space.token_dim}"
            )

    @property
    def levels(self) -> int:
        return 1


def _chunk_rows(k: int, dim: int) -> int:
    """Rows per chunk so that both the (rows, K) distances and a (rows, D) float64 copy stay bounded."""
    return max(1, CHUNK_ELEMENTS // max(k, dim, 1))


def nearest(
    x: torch.Tensor, codebook: torch.Tensor, sq_norms: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest codeword of each row: ``x (n, D)``, ``codebook (K, D)`` → ``(idx (n,), sq_dist (n,))``.

    ``||c||² - 2 x·c`` is minimised (``||x||²`` is constant per row), in row chunks of
    ``CHUNK_ELEMENTS / max(K, D)``. Ties go to the lowest index.
    """
    if sq_norms is None:
        sq_norms = (codebook * codebook).sum(-1)
    idx = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dist = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    step = _chunk_rows(*codebook.shape)
    for s in range(0, x.shape[0], step):
        xc = x[s : s + step]
        d = torch.addmm(sq_norms, xc, codebook.T, alpha=-2.0)  # (n, K)
        best, i = d.min(-1)
        idx[s : s + step] = i
        dist[s : s + step] = (best + (xc * xc).sum(-1)).clamp_min(0)
    return idx, dist


def check_tokens(x: Any, dim: int, *, where: str = "tokens") -> torch.Tensor:
    """Raise :class:`MelShapeError` unless ``x`` is a finite floating tensor ``(…, dim)``."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise MelShapeError(f"{where}: expected a tensor (..., {dim}), got {shape}")
    if not x.is_floating_point():
        raise MelShapeError(f"{where}: expected floating-point tokens, got dtype {x.dtype} (codes go to decode())")
    if x.shape[-1] != dim:
        raise MelShapeError(
            f"{where}: token size {x.shape[-1]} (shape {tuple(x.shape)}) does not match the quantiser's dim={dim}"
        )
    if not bool(torch.isfinite(x).all()):
        raise MelShapeError(f"{where}: contains NaN/Inf values")
    return x


# ------------------------------------------------------------------------------- base class
class Quantizer(nn.Module):
    """Codebooks ``(L, K, D)`` with greedy residual encode and summed decode.

    Subclasses set ``config_class`` and implement ``fit``. ``codebooks[l]`` is level ``l``;
    ``decode(codes[..., :l])`` reconstructs from the first ``l`` levels only.
    """

    config_class: type[VQConfig] = VQConfig

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self.register_buffer("codebooks", torch.zeros(config.levels, config.codebook_size, config.dim))
        # Tokens the codebooks were fitted on (0 = not fitted); a buffer so it survives load_state_dict.
        self.register_buffer("fitted_tokens", torch.zeros((), dtype=torch.long))
        self.fit_info: dict[str, Any] = {}

    # ---- properties
    @property
    def num_levels(self) -> int:
        return self.config.levels

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def is_fitted(self) -> bool:
        return int(self.fitted_tokens) > 0

    def tokenizer(self) -> ContinuousSpeechTokenizer | None:
        """The tokenizer of the token space the codebooks were fitted in (None if not recorded)."""
        space = self.config.token_space
        return None if space is None else ContinuousSpeechTokenizer(space)

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise QuantizerError(f"{type(self).__name__} is not fitted; call fit(tokens) or from_pretrained(dir)")

    def _fit_config(self, tokenizer: ContinuousSpeechTokenizer | None) -> VQConfig:
        """The config to fit with: the current one, with the tokenizer's token space if given."""
        if tokenizer is None:
            return self.config
        return self.config.replace(token_space=tokenizer.config.to_dict())

    # ---- codes
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(…, D)`` → codes ``(…, L)`` int64 (greedy: each level quantises the residual)."""
        self._require_fitted()
        check_tokens(x, self.dim)
        flat = x.reshape(-1, self.dim).to(self.codebooks)
        codes = torch.empty(flat.shape[0], self.num_levels, dtype=torch.long, device=flat.device)
        sq_norms = (self.codebooks * self.codebooks).sum(-1)  # (L, K)
        step = _chunk_rows(self.codebook_size, self.dim)
        for s in range(0, flat.shape[0], step):
            res = flat[s : s + step].clone()
            for level in range(self.num_levels):
                idx, _ = nearest(res, self.codebooks[level], sq_norms[level])
                codes[s : s + step, level] = idx
                res -= self.codebooks[level][idx]
        return codes.reshape(*x.shape[:-1], self.num_levels)

    def check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Raise :class:`QuantizerError` unless ``codes`` is an integer ``(…, l)``, ``1 <= l <= L``, in ``[0, K)``."""
        if not isinstance(codes, torch.Tensor) or codes.dim() < 1:
            raise QuantizerError(f"codes: expected an integer tensor (..., levels), got {type(codes).__name__}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise QuantizerError(f"codes: expected an integer dtype, got {codes.dtype} (tokens go to encode())")
        levels = codes.shape[-1]
        if not 1 <= levels <= self.num_levels:
            raise QuantizerError(
                f"codes: last axis has {levels} level(s) (shape {tuple(codes.shape)}); "
                f"this {type(self).__name__} has {self.num_levels} level(s), so expected 1..{self.num_levels}"
            )
        if codes.numel():
            lo, hi = int(codes.min()), int(codes.max())
            if lo < 0 or hi >= self.codebook_size:
                raise QuantizerError(
                    f"codes: values span [{lo}, {hi}] but codebook_size={self.codebook_size} "
                    f"allows [0, {self.codebook_size - 1}]"
                )
        return codes

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(…, l)`` (``l <= L``: the first ``l`` levels) → tokens ``(…, D)`` float32."""
        self._require_fitted()
        self.check_codes(codes)
        codes = codes.long().to(self.codebooks.device)
        out = self.codebooks[0][codes[..., 0]]
        for level in range(1, codes.shape[-1]):
            out = out + self.codebooks[level][codes[..., level]]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))``: the quantised tokens ``(…, D)``."""
        return self.decode(self.encode(x))

    # ---- checkpoints
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` (class tag, config, fit facts) + ``model.safetensors`` (codebooks)."""
        self._require_fitted()
        return save_checkpoint(
            directory, type(self).__name__, self.config.to_dict(), self.state_dict(), extra={"fit": self.fit_info}
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> Quantizer:
        """Rebuild a quantiser written by :meth:`save_pretrained`; foreign/damaged dirs raise CheckpointError."""
        meta, state = load_checkpoint(directory, cls.__name__)
        try:
            config = cls.config_class.from_dict(meta.get("config") or {})
        except ConfigError as exc:
            raise CheckpointError(f"{directory}: invalid {cls.config_class.__name__} ({exc})") from None
        model = cls(config)
        load_state_strict(model, state, directory)
        if not model.is_fitted or not bool(torch.isfinite(model.codebooks).all()):
            raise CheckpointError(f"{directory}: codebooks are unfitted or contain NaN/Inf")
        model.fit_info = dict(meta.get("fit") or {})
        return model.eval()

    def extra_repr(self) -> str:
        return f"levels={self.num_levels}, codebook_size={self.codebook_size}, dim={self.dim}, fitted={self.is_fitted}"
