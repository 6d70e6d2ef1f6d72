"""Exception types raised by flow_omni.

Every error a user can trigger with bad input derives from :class:`FlowOmniError`, so a caller
can catch the library's complaints without also swallowing programming errors. Each subclass
also derives from the closest built-in type (``ValueError``, ``FileNotFoundError``...) so that
generic handlers keep working.
"""

from __future__ import annotations


class FlowOmniError(Exception):
    """Base class of every error flow_omni raises on purpose."""


class ConfigError(FlowOmniError, ValueError):
    """A configuration or an argument had an unknown key, a missing key, or a value of the wrong type or
    out of its range."""


class AudioError(FlowOmniError, ValueError):
    """Audio was unreadable, empty, silent, non-finite, too long or of the wrong shape/rate."""


class MelShapeError(FlowOmniError, ValueError):
    """A mel spectrogram or speech token had the wrong number of bins, dims or frames."""


class CheckpointError(FlowOmniError, ValueError):
    """A checkpoint directory was missing files, truncated, or written by another class."""


class HubUnavailableError(FlowOmniError, RuntimeError):
    """Weights named by a hub id are not in the local cache, and cannot be downloaded now (offline, the hub
    unreachable, or the hub refused them)."""


class VocoderUnavailableError(HubUnavailableError):
    """No Vocos checkpoint could be found locally and the hub could not be reached."""


class WeightsUnavailableError(FlowOmniError, RuntimeError):
    """Pretrained weights that an optional package ships are not installed (the message says which)."""


class HubError(FlowOmniError, RuntimeError):
    """A model could not be pushed to the Hugging Face hub: huggingface_hub is missing, the repository id is
    malformed, offline mode is on, or the hub refused the request (the message says which)."""


class OutputFolderError(FlowOmniError, FileExistsError):
    """An output folder holds an earlier run, or another process is training into it."""


class OutputPathError(FlowOmniError, ValueError):
    """A file or folder to write cannot be written there: a folder where a file is wanted (or the other
    way round), an extension whose format is not supported, or a place the process may not write to."""


class UnknownCharactersWarning(UserWarning):
    """Text holds characters the text tokenizer does not know; each of them is read as ``<unk>``."""
