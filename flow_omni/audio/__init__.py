"""Audio front end: I/O, the Vocos-24k log-mel, normalisation, token grouping, augmentation."""

from flow_omni.audio.io import TARGET_SAMPLE_RATE, load_audio, resample, save_audio, to_mono, validate_audio
from flow_omni.audio.mel import LOG_MEL_FLOOR, LogMel, MelConfig, check_mel
from flow_omni.audio.normalize import MelNormalizer, MelStats, MelStatsAccumulator, fit_mel_stats
from flow_omni.audio.tokens import group_frames, num_tokens, ungroup_frames

__all__ = [
    "TARGET_SAMPLE_RATE",
    "LOG_MEL_FLOOR",
    "LogMel",
    "MelConfig",
    "MelNormalizer",
    "MelStats",
    "MelStatsAccumulator",
    "check_mel",
    "fit_mel_stats",
    "group_frames",
    "load_audio",
    "num_tokens",
    "resample",
    "save_audio",
    "to_mono",
    "ungroup_frames",
    "validate_audio",
]
