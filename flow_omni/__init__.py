"""flow_omni: speech language models that speak in continuous speech tokens.

Main objects::

    from flow_omni import FlowOmni, FlowOmniConfig, Sample, GenerationConfig
    from flow_omni import ContinuousSpeechTokenizer, FlowHead, Vocoder, GriffinLim
    from flow_omni import push_to_hub  # a saved model folder → the Hugging Face hub
"""

from flow_omni.audio.speech_tokens import ContinuousSpeechTokenizer, SpeechTokenConfig
from flow_omni.hub import push_to_hub
from flow_omni.layout import LayoutConfig, Sample
from flow_omni.models.flow_head import FlowHead, FlowHeadConfig
from flow_omni.models.flow_omni import FlowOmni, FlowOmniConfig
from flow_omni.models.generation import Generated, GenerationConfig, StreamEvent
from flow_omni.vocoder import GriffinLim, StreamingVocoder, Vocoder, VocoderConfig

__version__ = "0.1.0"

__all__ = [
    "ContinuousSpeechTokenizer",
    "FlowHead",
    "FlowHeadConfig",
    "FlowOmni",
    "FlowOmniConfig",
    "Generated",
    "GenerationConfig",
    "GriffinLim",
    "LayoutConfig",
    "Sample",
    "SpeechTokenConfig",
    "StreamEvent",
    "StreamingVocoder",
    "Vocoder",
    "VocoderConfig",
    "push_to_hub",
]
