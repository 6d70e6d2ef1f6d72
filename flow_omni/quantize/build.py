"""Quantiser construction from a FlowOmni config (``tokens`` kind + the quantiser's config dict)."""

from __future__ import annotations

from typing import Any

from flow_omni.errors import ConfigError
from flow_omni.quantize.kmeans import KMeansConfig, KMeansQuantizer, Quantizer, VQConfig
from flow_omni.quantize.rvq import ResidualVQ, RVQConfig

_CLASSES: dict[str, tuple[type[VQConfig], type[Quantizer]]] = {
    "kmeans": (KMeansConfig, KMeansQuantizer),
    "rvq": (RVQConfig, ResidualVQ),
}


def quantizer_config(kind: str, data: dict[str, Any], *, dim: int) -> VQConfig:
    """The typed config of a ``kind`` quantiser for ``dim``-dim tokens (``dim`` is filled in / checked)."""
    if kind not in _CLASSES:
        raise ConfigError(f"unknown quantiser kind {kind!r}; expected one of {sorted(_CLASSES)}")
    data = dict(data)
    if data.setdefault("dim", dim) != dim:
        raise ConfigError(f"the quantiser is for {data['dim']}-dim tokens but the speech tokens have {dim} dims")
    return _CLASSES[kind][0].from_dict(data)


def build_quantizer(kind: str, data: dict[str, Any], *, dim: int) -> Quantizer:
    """An unfitted quantiser (its codebooks are filled by ``fit`` or by loading a checkpoint)."""
    cfg = quantizer_config(kind, data, dim=dim)
    return _CLASSES[kind][1](cfg)
