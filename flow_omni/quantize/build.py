"""Quantiser construction from a kind name (``"kmeans"`` / ``"rvq"``) and a config dict, as FlowOmniConfig has them."""

from __future__ import annotations

from typing import Any

from flow_omni.errors import ConfigError
from flow_omni.quantize.base import Quantizer, VQConfig
from flow_omni.quantize.kmeans import KMeansQuantizer
from flow_omni.quantize.rvq import ResidualVQ

#: Kind name (``FlowOmniConfig.tokens``, :func:`~flow_omni.quantize.fit_quantizer`) → quantiser class.
QUANTIZER_KINDS: dict[str, type[Quantizer]] = {"kmeans": KMeansQuantizer, "rvq": ResidualVQ}


def quantizer_config(kind: str, data: dict[str, Any], *, dim: int) -> VQConfig:
    """The typed config of a ``kind`` quantiser for ``dim``-dim tokens (``dim`` is filled in / checked)."""
    if kind not in QUANTIZER_KINDS:
        raise ConfigError(f"unknown quantiser kind {kind!r}; expected one of {sorted(QUANTIZER_KINDS)}")
    data = dict(data)
    if data.setdefault("dim", dim) != dim:
        raise ConfigError(f"the quantiser is for {data['dim']}-dim tokens but the speech tokens have {dim} dims")
    return QUANTIZER_KINDS[kind].config_class.from_dict(data)


def build_quantizer(kind: str, data: dict[str, Any], *, dim: int) -> Quantizer:
    """An unfitted quantiser (its codebooks are filled by ``fit`` or by loading a checkpoint)."""
    return QUANTIZER_KINDS[kind](quantizer_config(kind, data, dim=dim))
