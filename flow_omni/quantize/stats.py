"""Quantiser diagnostics: codebook usage, code perplexity and reconstruction error.

* :func:`codebook_usage` / :func:`perplexity`: per level, from codes ``(…, L)`` (a 1-D tensor is
  one level and gives a scalar). Perplexity is ``exp`` of the natural-log entropy of the empirical
  code distribution: ``K`` for uniform use, 1 for a collapsed codebook.
* :func:`reconstruction_error`: MSE in the normalised token space (what the quantiser minimises)
  and mean ``|Δ log-mel|`` in the raw Vocos log-mel domain (natural log, what the vocoder sees),
  plus usage, perplexity and bitrate, for the first ``num_levels`` levels.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from flow_omni.audio.speech_tokens import ContinuousSpeechTokenizer
from flow_omni.errors import ConfigError, MelShapeError
from flow_omni.quantize.base import Quantizer, QuantizerError, TokenSource, check_tokens


def code_histogram(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Counts per codeword: codes ``(…, L)`` → ``(L, K)`` int64; a 1-D tensor → ``(K,)``."""
    if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.dtype == torch.bool:
        raise QuantizerError(f"codes: expected an integer tensor, got {getattr(codes, 'dtype', type(codes).__name__)}")
    if codebook_size < 1:
        raise QuantizerError(f"codebook_size must be >= 1, got {codebook_size}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= codebook_size):
        raise QuantizerError(
            f"codes: values span [{int(codes.min())}, {int(codes.max())}] but codebook_size={codebook_size}"
        )
    if codes.dim() == 0:
        raise QuantizerError("codes: expected (N,) or (..., L), got a 0-d tensor")
    single = codes.dim() == 1
    flat = codes.reshape(-1, 1) if single else codes.reshape(-1, codes.shape[-1])
    flat = flat.long().cpu()
    hist = torch.stack([torch.bincount(flat[:, lvl], minlength=codebook_size) for lvl in range(flat.shape[1])])
    return hist[0] if single else hist


def usage_from_histogram(hist: torch.Tensor) -> torch.Tensor:
    """Fraction of codewords used at least once, from ``(…, K)`` counts."""
    return (hist > 0).double().mean(-1)


def perplexity_from_histogram(hist: torch.Tensor) -> torch.Tensor:
    """``exp(entropy)`` of the code distribution, from ``(…, K)`` counts (0 log 0 = 0)."""
    total = hist.sum(-1, keepdim=True)
    if bool((total == 0).any()):
        raise QuantizerError("perplexity of an empty set of codes is undefined")
    p = hist.double() / total
    ent = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(-1)
    return ent.exp()


def codebook_usage(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Fraction of the ``K`` codewords used, per level: codes ``(…, L)`` → ``(L,)``; ``(N,)`` → scalar."""
    return usage_from_histogram(code_histogram(codes, codebook_size))


def perplexity(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """``exp`` of the entropy of the code distribution, per level: ``(…, L)`` → ``(L,)``; ``(N,)`` → scalar."""
    return perplexity_from_histogram(code_histogram(codes, codebook_size))


@dataclasses.dataclass
class ReconstructionError:
    """Reconstruction of a token set by the first ``num_levels`` levels of a quantiser."""

    mse: float  # mean squared error per element, normalised token space
    rel_mse: float  # mse / variance of the tokens (fraction of variance not explained)
    mel_l1: float | None  # mean |Δ log-mel| over bins x frames, raw log-mel domain (None: no tokenizer)
    usage: list[float]  # per level
    perplexity: list[float]  # per level
    num_tokens: int
    num_levels: int
    codebook_size: int
    bits_per_token: float
    bitrate: float | None  # bits per second of audio (None: token rate unknown)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _resolve_tokenizer(
    quantizer: Quantizer, tokenizer: ContinuousSpeechTokenizer | None
) -> ContinuousSpeechTokenizer | None:
    space = quantizer.config.token_space
    if tokenizer is None:
        return quantizer.tokenizer()
    if tokenizer.token_dim != quantizer.dim:
        raise MelShapeError(
            f"tokenizer makes {tokenizer.token_dim}-dim tokens (r={tokenizer.r}) "
            f"but the quantiser has dim={quantizer.dim}"
        )
    if space is not None and space.to_dict() != tokenizer.config.to_dict():
        raise ConfigError(
            "the quantiser was fitted in a different token space than this tokenizer's (mel settings, r or "
            "normalisation stats differ); its codes would decode to the wrong mel"
        )
    return tokenizer


@torch.no_grad()
def reconstruction_error(
    quantizer: Quantizer,
    tokens: TokenSource,
    tokenizer: ContinuousSpeechTokenizer | None = None,
    *,
    num_levels: int | None = None,
) -> ReconstructionError:
    """Encode → decode ``tokens`` (``(…, D)`` or an iterable of such chunks) and measure the error.

    The mel-domain error needs the token space: ``tokenizer`` if given, else the one recorded in
    the quantiser's config at fit time; a tokenizer that disagrees with the recorded space raises
    :class:`ConfigError`. ``num_levels`` (default all) decodes with the first levels only.
    """
    levels = quantizer.num_levels if num_levels is None else num_levels
    if not 1 <= levels <= quantizer.num_levels:
        raise QuantizerError(f"num_levels={num_levels} but the quantiser has {quantizer.num_levels} level(s)")
    tok = _resolve_tokenizer(quantizer, tokenizer)
    dim, k = quantizer.dim, quantizer.codebook_size
    chunks = [tokens] if isinstance(tokens, torch.Tensor) else tokens
    n = 0
    sq_err = 0.0
    mel_abs = 0.0
    mel_count = 0
    s1 = torch.zeros(dim, dtype=torch.float64)
    s2 = torch.zeros(dim, dtype=torch.float64)
    hist = torch.zeros(levels, k, dtype=torch.long)
    for i, chunk in enumerate(chunks):
        x = check_tokens(chunk, dim, where=f"tokens chunk {i}").reshape(-1, dim).to(quantizer.codebooks)
        if x.shape[0] == 0:
            continue
        codes = quantizer.encode(x)[..., :levels]
        x_hat = quantizer.decode(codes)
        xd = x.double().cpu()
        sq_err += float(((x_hat.double().cpu() - xd) ** 2).sum())
        s1 += xd.sum(0)
        s2 += (xd * xd).sum(0)
        hist += code_histogram(codes, k)
        n += x.shape[0]
        if tok is not None:
            tok = tok.to(x.device)
            diff = tok.decode(x_hat) - tok.decode(x)
            mel_abs += float(diff.double().abs().sum())
            mel_count += diff.numel()
    if n == 0:
        raise QuantizerError("reconstruction_error: no tokens given")
    var = float((s2 / n - (s1 / n) ** 2).clamp_min(0).mean())
    mse = sq_err / (n * dim)
    bits = levels * math.log2(k)
    return ReconstructionError(
        mse=mse,
        rel_mse=mse / var if var > 0 else math.inf,
        mel_l1=mel_abs / mel_count if tok is not None else None,
        usage=usage_from_histogram(hist).tolist(),
        perplexity=perplexity_from_histogram(hist).tolist(),
        num_tokens=n,
        num_levels=levels,
        codebook_size=k,
        bits_per_token=bits,
        bitrate=bits * tok.config.token_rate if tok is not None else None,
    )
