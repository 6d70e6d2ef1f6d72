"""Mel → waveform: the Vocos vocoder, its streaming decoder and the Griffin-Lim fallback.

* :class:`Vocoder` / :class:`VocoderConfig`: a ``vocos.Vocos`` (random init, or
  ``Vocoder.from_pretrained(dir_or_repo_id)``), ``decode((n_mels, F)) → (T,)``.
* :class:`StreamingVocoder` / :func:`stream_decode`: chunked decoding equal to offline decoding.
* :class:`GriffinLim`: explicit weight-free fallback (low quality).
* :func:`load_vocoder`: the vocoder a user names (``"griffinlim"`` or a Vocos folder / hub id).
"""

from flow_omni.vocoder.griffinlim import GriffinLim
from flow_omni.vocoder.load import GRIFFIN_LIM_NAMES, load_vocoder
from flow_omni.vocoder.streaming import StreamingVocoder, stream_decode
from flow_omni.vocoder.vocos_vocoder import (
    DEFAULT_REPO_ID,
    Vocoder,
    VocoderConfig,
    build_vocos,
    vocoder_config_from_vocos_yaml,
)

__all__ = [
    "DEFAULT_REPO_ID",
    "GRIFFIN_LIM_NAMES",
    "GriffinLim",
    "StreamingVocoder",
    "Vocoder",
    "VocoderConfig",
    "build_vocos",
    "load_vocoder",
    "stream_decode",
    "vocoder_config_from_vocos_yaml",
]
