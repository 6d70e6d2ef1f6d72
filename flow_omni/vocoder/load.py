"""Choosing the vocoder a user names: a trained Vocos, or the Griffin-Lim fallback."""

from __future__ import annotations

from typing import Any

from flow_omni.vocoder.griffinlim import GriffinLim
from flow_omni.vocoder.vocos_vocoder import Vocoder

#: Names that ask for :class:`GriffinLim` (as does no name at all).
GRIFFIN_LIM_NAMES = ("griffinlim", "griffin-lim")


def load_vocoder(spec: str | None, **griffin_lim: Any) -> Vocoder | GriffinLim:
    """``None``, ``"griffinlim"`` or ``"griffin-lim"`` → :class:`GriffinLim` (built with ``griffin_lim``);
    anything else → :meth:`Vocoder.from_pretrained` of that checkpoint folder or hub id."""
    if spec is None or spec in GRIFFIN_LIM_NAMES:
        return GriffinLim(**griffin_lim)
    return Vocoder.from_pretrained(spec)


__all__ = ["GRIFFIN_LIM_NAMES", "load_vocoder"]
