"""Reading, writing, validating, mixing down and resampling audio.

Audio goes through ``soundfile`` (``torchaudio.load`` needs torchcodec, which does not load on the
pinned install). In memory, audio is a float32 tensor of shape ``(T,)`` (mono)
or ``(C, T)`` (channels first), in [-1, 1].
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from flow_omni.checks import check_output_file
from flow_omni.errors import AudioError

#: The rate of the Vocos-24k mel and of every waveform the models see.
TARGET_SAMPLE_RATE = 24000
#: Peak amplitude below which audio counts as silent (about -100 dBFS).
SILENCE_PEAK = 1e-5
# libsndfile's log line for a data chunk that claims more bytes than the file holds: WAV's "data",
# AIFF's "SSND", AU's "Data Size".
_DATA_SHORT = re.compile(r"^\s*(?:data|SSND|Data Size)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_BLOCK_ALIGN = re.compile(r"Block Align\s*:\s*(\d+)")
# Data sizes that streaming encoders write as placeholders (the length is unknown); not truncation.
_STREAMING_SIZES = (0xFFFFFFFF, 0x7FFFFFFF)

#: What :func:`save_audio` and streamed writers write for each extension: (soundfile format, subtype).
#: 16-bit PCM where the format holds PCM; the lossy formats take their own codec.
_WRITE_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
    ".aiff": ("AIFF", "PCM_16"),
    ".aif": ("AIFF", "PCM_16"),
    ".au": ("AU", "PCM_16"),
    ".caf": ("CAF", "PCM_16"),
    ".w64": ("W64", "PCM_16"),
}
#: The audio files this installation can write, by extension (MP3 needs libsndfile 1.1 or newer).
AUDIO_OUTPUT_FORMATS = {
    ext: (fmt, subtype)
    for ext, (fmt, subtype) in _WRITE_FORMATS.items()
    if fmt in sf.available_formats() and sf.check_format(fmt, subtype)
}


def data_shortfall(extra_info: str, samplerate: int) -> str | None:
    """Why a WAV/AIFF/AU file holds less audio than its header declares (``"its header declares …"``), or None.

    soundfile opens such a file whose data chunk was cut short and silently reports (and reads) the
    shorter length; libsndfile's log (``extra_info``) keeps the declared size, which is the only
    trace of the truncation.
    """
    m = _DATA_SHORT.search(extra_info or "")
    if not m:
        return None
    declared, actual = int(m.group(1)), int(m.group(2))
    if actual >= declared or declared in _STREAMING_SIZES:
        return None
    align = _BLOCK_ALIGN.search(extra_info)
    seconds = ""
    if align and int(align.group(1)) > 0 and samplerate > 0:
        per_second = int(align.group(1)) * samplerate
        seconds = f" ({actual / per_second:.2f} s of {declared / per_second:.2f} s)"
    return f"its header declares {declared} bytes of audio data but the file holds {actual}{seconds}"


def validate_audio(
    audio: torch.Tensor,
    *,
    name: str = "audio",
    sample_rate: int | None = None,
    max_seconds: float | None = None,
    allow_silent: bool = True,
) -> torch.Tensor:
    """Check a waveform and return it unchanged; raise :class:`AudioError` with the reason.

    Args:
        audio: ``(T,)`` or ``(C, T)``.
        sample_rate: needed only for the ``max_seconds`` check.
        max_seconds: reject longer audio (over-long input is a frequent cause of OOM later on).
        allow_silent: when False, all-zero (or sub -100 dBFS) audio is rejected.
    """
    if not isinstance(audio, torch.Tensor):
        raise AudioError(f"{name}: expected a torch.Tensor, got {type(audio).__name__}")
    if audio.dim() not in (1, 2):
        raise AudioError(f"{name}: expected shape (T,) or (C, T), got {tuple(audio.shape)}")
    if not audio.is_floating_point():
        raise AudioError(f"{name}: expected floating-point samples in [-1, 1], got dtype {audio.dtype}")
    if audio.shape[-1] == 0:
        raise AudioError(f"{name}: is empty (0 samples)")
    finite = torch.isfinite(audio)
    if not bool(finite.all()):
        n_bad = int((~finite).sum())
        first = int((~finite).reshape(-1).nonzero()[0])
        raise AudioError(f"{name}: contains {n_bad} NaN/Inf sample(s) (first at flat index {first})")
    if max_seconds is not None:
        if sample_rate is None:
            raise ValueError("max_seconds needs sample_rate")
        seconds = audio.shape[-1] / sample_rate
        if seconds > max_seconds:
            raise AudioError(f"{name}: is {seconds:.2f} s long; the limit is {max_seconds:.2f} s")
    if not allow_silent and float(audio.abs().max()) < SILENCE_PEAK:
        raise AudioError(f"{name}: is silent (peak below {SILENCE_PEAK:g}); expected audible speech")
    return audio


def to_mono(audio: torch.Tensor) -> torch.Tensor:
    """``(C, T)`` or ``(T,)`` → ``(T,)`` by averaging channels (no clipping can occur)."""
    if audio.dim() == 1:
        return audio
    if audio.dim() != 2:
        raise AudioError(f"expected (T,) or (C, T) audio, got shape {tuple(audio.shape)}")
    return audio.mean(dim=0)


def resample(audio: torch.Tensor, orig_sr: int, new_sr: int = TARGET_SAMPLE_RATE) -> torch.Tensor:
    """Band-limited resampling along the last axis; output length is ``ceil(T * new / orig)``."""
    if orig_sr <= 0 or new_sr <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    if orig_sr == new_sr:
        return audio
    return AF.resample(audio, orig_freq=int(orig_sr), new_freq=int(new_sr))


def load_audio(
    path: str | Path,
    sample_rate: int = TARGET_SAMPLE_RATE,
    *,
    mono: bool = True,
    max_seconds: float | None = None,
    allow_silent: bool = True,
) -> torch.Tensor:
    """Read an audio file as float32, mix to mono, resample to ``sample_rate``.

    Returns:
        ``(T,)`` when ``mono`` else ``(C, T)``.
    Raises:
        AudioError: missing/unreadable/unsupported file, a file shorter than its header says
            (truncated), empty or non-finite audio, too long.
    """
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path} is a folder; expected an audio file")
    if not path.is_file():
        raise AudioError(f"audio file {path} does not exist")
    try:
        fh = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(
            f"cannot read {path} as audio ({exc}); supported formats: {', '.join(sorted(sf.available_formats()))}"
        ) from None
    with fh:
        sr, declared, shortfall = fh.samplerate, fh.frames, data_shortfall(fh.extra_info, fh.samplerate)
        try:
            data = fh.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:  # the header was fine, the data is not (a cut FLAC)
            raise AudioError(f"cannot decode {path} ({exc}); the file is truncated or corrupt") from None
    # A cut-off file must not pass for a shorter, complete one (a training target, a prompt).
    if shortfall is None and len(data) < declared:
        shortfall = f"its header declares {declared} frames but only {len(data)} could be read"
    if shortfall is not None:
        raise AudioError(f"{path} is truncated: {shortfall}")
    audio = torch.from_numpy(np.ascontiguousarray(data.T))  # (C, T)
    validate_audio(audio, name=str(path))
    if mono:
        audio = to_mono(audio)
    audio = resample(audio, sr, sample_rate)
    validate_audio(audio, name=str(path), sample_rate=sample_rate, max_seconds=max_seconds, allow_silent=allow_silent)
    return audio.contiguous()


def audio_output_format(path: str | Path, what: str = "audio file") -> tuple[str, str]:
    """The ``(format, subtype)`` soundfile writes ``path`` with, chosen by its extension; raise
    :class:`~flow_omni.errors.OutputPathError` when the extension is not in :data:`AUDIO_OUTPUT_FORMATS`
    or the path cannot be written (``what`` names it in the message). Call it before the work."""
    p = check_output_file(path, what, AUDIO_OUTPUT_FORMATS)
    return AUDIO_OUTPUT_FORMATS[p.suffix.lower()]


def save_audio(path: str | Path, audio: torch.Tensor, sample_rate: int = TARGET_SAMPLE_RATE) -> Path:
    """Write ``(T,)`` or ``(C, T)`` float audio (clipped to [-1, 1]) in the format its extension names
    (:data:`AUDIO_OUTPUT_FORMATS`: 16-bit PCM for .wav, .flac, .aiff, …; Vorbis for .ogg, MPEG for .mp3)."""
    path = Path(path)
    fmt, subtype = audio_output_format(path)
    audio = audio.detach().cpu().float()
    validate_audio(audio, name=f"audio for {path}")
    if audio.dim() == 2:
        audio = audio.T  # soundfile wants (T, C)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.clamp(-1.0, 1.0).numpy(), int(sample_rate), format=fmt, subtype=subtype)
    return path
