"""Quantisers fitted by the library on continuous speech tokens, for discrete-token baselines.

* :class:`KMeansQuantizer` (one codebook of ``K``) and :class:`ResidualVQ` (``L`` levels of ``K``):
  tokens ``(…, D)`` → codes ``(…, L)`` int64 → tokens; ``decode(codes[..., :l])`` uses the first
  ``l`` levels. ``codebooks`` ``(L, K, D)`` can initialise a model's code embeddings.
* ``fit(tokens | iterable, progress=True, tokenizer=None)``; ``save_pretrained(dir)`` /
  ``from_pretrained(dir)`` (``config.json`` + ``model.safetensors``); :func:`load_quantizer`
  dispatches on the class tag; :func:`fit_quantizer` builds and fits in one call.
* Metrics: :func:`codebook_usage`, :func:`perplexity`, :func:`reconstruction_error`.

Example::

    tok = ContinuousSpeechTokenizer(); tok.fit(audios)
    rvq = fit_quantizer("rvq", (tok.encode(a) for a in audios), codebook_size=256, num_levels=4, tokenizer=tok)
    codes = rvq.encode(tok.encode(audio))          # (N, 4)
    mel = tok.decode(rvq.decode(codes[..., :2]))   # 2-level reconstruction, (100, 4N)
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Literal

import torch

from flow_omni.audio.speech_tokens import ContinuousSpeechTokenizer
from flow_omni.checkpoint import CONFIG_NAME, read_checkpoint_config
from flow_omni.errors import CheckpointError, ConfigError
from flow_omni.quantize.base import Quantizer, QuantizerError, TokenSource, VQConfig
from flow_omni.quantize.build import QUANTIZER_KINDS, build_quantizer
from flow_omni.quantize.kmeans import KMeansConfig, KMeansQuantizer, KMeansResult, kmeans
from flow_omni.quantize.rvq import ResidualVQ, RVQConfig
from flow_omni.quantize.stats import (
    ReconstructionError,
    code_histogram,
    codebook_usage,
    perplexity,
    reconstruction_error,
)

#: Class tag in ``config.json`` → quantiser class.
QUANTIZER_CLASSES: dict[str, type[Quantizer]] = {cls.__name__: cls for cls in QUANTIZER_KINDS.values()}


def load_quantizer(directory: str | Path) -> Quantizer:
    """Load any quantiser written by ``save_pretrained``, choosing the class from the tag in ``config.json``."""
    directory = Path(directory)
    try:
        tag = json.loads((directory / CONFIG_NAME).read_text()).get("flow_omni_class")
    except (OSError, ValueError, AttributeError):
        tag = None
    cls = QUANTIZER_CLASSES.get(tag) if isinstance(tag, str) else None
    if cls is None:
        if tag is None:  # missing / unreadable / foreign config: the checkpoint module words the error
            read_checkpoint_config(directory, "quantizer (KMeansQuantizer or ResidualVQ)")
        raise CheckpointError(
            f"{directory} holds a {tag} checkpoint, not a quantizer; expected one of {sorted(QUANTIZER_CLASSES)}"
        )
    return cls.from_pretrained(directory)


def fit_quantizer(
    kind: Literal["kmeans", "rvq"],
    tokens: TokenSource,
    *,
    progress: bool = True,
    tokenizer: ContinuousSpeechTokenizer | None = None,
    **config: Any,
) -> Quantizer:
    """Build a ``"kmeans"`` or ``"rvq"`` quantiser from config fields and fit it.

    ``dim`` defaults to the size of the tokens (peeked from the first chunk of an iterable).
    """
    if kind not in QUANTIZER_KINDS:
        raise ConfigError(f"fit_quantizer: kind must be one of {sorted(QUANTIZER_KINDS)}, got {kind!r}")
    if "dim" not in config:
        if isinstance(tokens, torch.Tensor):
            first = tokens
        else:
            it = iter(tokens)
            try:
                first = next(it)
            except StopIteration:
                raise QuantizerError("fit_quantizer: no tokens to fit on (empty iterable)") from None
            tokens = itertools.chain([first], it)
        if not isinstance(first, torch.Tensor) or first.dim() < 1:
            raise QuantizerError(f"fit_quantizer: expected token tensors (..., D), got {type(first).__name__}")
        config["dim"] = int(first.shape[-1])
    model = build_quantizer(kind, config, dim=config["dim"])
    return model.fit(tokens, progress=progress, tokenizer=tokenizer)


__all__ = [
    "QUANTIZER_CLASSES",
    "QUANTIZER_KINDS",
    "KMeansConfig",
    "KMeansQuantizer",
    "KMeansResult",
    "Quantizer",
    "QuantizerError",
    "RVQConfig",
    "ReconstructionError",
    "ResidualVQ",
    "VQConfig",
    "code_histogram",
    "codebook_usage",
    "fit_quantizer",
    "kmeans",
    "load_quantizer",
    "perplexity",
    "reconstruction_error",
]
