"""Offline text-to-speech with the libespeak-ng that the ``espeakng-loader`` wheel ships (ctypes).

No apt package, no subprocess: the shared library and its ``espeak-ng-data`` folder come from the
``espeakng-loader`` wheel (docs/design.md, "Offline assets") and are driven through the C API in synchronous retrieval
mode (``AUDIO_OUTPUT_SYNCHRONOUS``), where a callback receives the int16 samples.

Voices are written ``language[+variant]``, as on the ``espeak-ng`` command line: ``en-us``,
``en-gb-x-rp+f3``, ``en-029+klatt2``. The language part names a voice file under
``espeak-ng-data/lang`` (see :meth:`Espeak.list_languages`); the variant names a file under
``espeak-ng-data/voices/!v`` (:meth:`Espeak.list_variants`) that changes pitch, formants, breath
and so on, i.e. the speaker.

Determinism. espeak-ng keeps synthesis state in C globals and function-level statics that
``espeak_Initialize``/``espeak_Terminate`` never reset (the pitch-flutter phase, the wave
generator's automatic gain and cycle counter), and draws breath noise from libc ``rand()``. With one
library instance per process, the same text and voice gives different samples (even a different
length) depending on what was spoken before. So every call here maps a private copy of the
library afresh (``dlopen``), initialises it, speaks, and unmaps it again (``dlclose``), after
seeding libc ``rand`` and espeak's own generator. This costs about 6 ms per call on the
reference machine and makes ``synthesize`` a pure function of its arguments. The private copy
(not the wheel's file) is what gets mapped, so that another user of ``espeakng-loader`` in the
same process, whose handle would keep the library mapped, cannot leak state into ours.

Output is trimmed deterministically: everything before the first and after the last sample whose
magnitude reaches :data:`TRIM_THRESHOLD` is dropped, and exactly ``margin_seconds`` of the
original signal (zero-padded where espeak produced less) is kept on each side; then the audio is
resampled from espeak's 22 050 Hz to 24 kHz (in float64, so thread count cannot change a bit).
"""

from __future__ import annotations

import _ctypes
import atexit
import ctypes
import difflib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flow_omni.audio.io import TARGET_SAMPLE_RATE, resample
from flow_omni.errors import FlowOmniError

#: espeak-ng's own output rate (its phoneme data is made for it).
ESPEAK_SAMPLE_RATE = 22050
#: int16 magnitude (about -54 dBFS) that counts as speech for trimming.
TRIM_THRESHOLD = 64
#: Silence kept before and after the speech after trimming.
DEFAULT_MARGIN_SECONDS = 0.05
#: Valid ranges of the espeak parameters (espeak clamps silently; we refuse instead).
RATE_RANGE = (80, 450)
PITCH_RANGE = (0, 99)

#: Accents and variant files whose speech a small ASR model still understands. Chosen by
#: transcribing 8 generated sentences + 4 QA questions per voice with Whisper tiny.en
#: (faster-whisper, int8); the grammar's odd sentences inflate all WERs, the ranking is what
#: counts. Accents with variant m3: en 0.27, en-gb-x-rp 0.32, en-us 0.33, en-gb-x-gbclan 0.35
#: (kept) vs en-gb-x-gbcwmd 0.47, en-029 0.48, en-us-nyc 0.51, en-gb-scotland 0.61 (left out).
#: Variants in en-us: 0.21-0.40 for those kept, f1 0.49; novelty variants (whisper, croak,
#: robosoft*, Demonic, ...) reach 0.4-1.2 and are left out.
ENGLISH_LANGUAGES = ("en-us", "en", "en-gb-x-rp", "en-gb-x-gbclan")
ENGLISH_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6",
)  # fmt: skip

# C constants from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_EE_OK, _EE_NOT_FOUND = 0, 2
_RAND_SEED = 1234

_EVENT_LIST_TERMINATED, _EVENT_WORD = 0, 1


class _Event(ctypes.Structure):
    """``espeak_EVENT`` of speak_lib.h (the trailing ``id`` union of an int, a pointer and ``char[8]``
    is 8 bytes on every platform)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character position of the word in the text
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds into the generated speech
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class EspeakError(FlowOmniError, RuntimeError):
    """libespeak-ng could not be found/loaded, or it failed to synthesise."""


class UnknownVoiceError(FlowOmniError, ValueError):
    """A voice spec named a language or variant that espeak-ng-data does not have."""


class _Voice(ctypes.Structure):
    # ``languages`` is a packed list of (priority byte, NUL-terminated name), so a raw pointer.
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


@dataclass(frozen=True)
class VoiceSpec:
    """``language`` (an espeak voice file name, lowercase) and an optional ``variant``."""

    language: str
    variant: str | None = None

    @classmethod
    def parse(cls, spec: str, variant: str | None = None) -> VoiceSpec:
        """``"en-us+f3"`` → ``VoiceSpec("en-us", "f3")``; ``variant`` may be given separately."""
        if not isinstance(spec, str) or not spec.strip():
            raise UnknownVoiceError(f"voice must be a non-empty string like 'en-us' or 'en-us+f3', got {spec!r}")
        lang, plus, var = spec.strip().partition("+")
        if plus and not var:
            raise UnknownVoiceError(f"voice {spec!r} ends with '+': expected 'language+variant', e.g. 'en-us+f3'")
        if var and variant is not None:
            raise UnknownVoiceError(f"voice {spec!r} already names a variant; do not also pass variant={variant!r}")
        return cls(lang.lower(), var or variant)

    def __str__(self) -> str:
        return self.language if self.variant is None else f"{self.language}+{self.variant}"


def default_voices(
    languages: tuple[str, ...] | list[str] = ENGLISH_LANGUAGES,
    variants: tuple[str, ...] | list[str] = ENGLISH_VARIANTS,
) -> list[str]:
    """Every ``language+variant`` combination, as voice spec strings."""
    return [f"{lang}+{var}" for var in variants for lang in languages]


def _locate() -> tuple[Path, Path]:
    try:
        import espeakng_loader
    except ImportError:
        raise EspeakError(
            "the espeakng-loader package is not installed; it ships libespeak-ng and its data "
            "(pip install 'espeakng-loader>=0.2,<0.3')"
        ) from None
    lib = Path(espeakng_loader.get_library_path())
    try:
        data = Path(espeakng_loader.get_data_path())
    except RuntimeError as exc:
        raise EspeakError(f"espeakng-loader has no espeak-ng-data folder ({exc}); reinstall the package") from None
    return lib, data


class Espeak:
    """Thread-safe, deterministic espeak-ng synthesiser. Create it once and reuse it.

    Args:
        library_path, data_path: default to the files shipped by ``espeakng-loader``.
    Raises:
        EspeakError: the library or its data cannot be found or loaded.
    """

    # One lock for all instances: espeak's state is per mapped library, but libc rand is global.
    _lock = threading.Lock()

    def __init__(self, library_path: str | Path | None = None, data_path: str | Path | None = None) -> None:
        if library_path is None or data_path is None:
            lib_default, data_default = _locate()
            library_path = library_path or lib_default
            data_path = data_path or data_default
        self.library_path = Path(library_path)
        self.data_path = Path(data_path)
        if not self.library_path.is_file():
            raise EspeakError(
                f"libespeak-ng not found at {self.library_path}; expected the .so shipped by espeakng-loader"
            )
        if not (self.data_path / "phontab").is_file():
            raise EspeakError(f"{self.data_path} is not an espeak-ng-data folder (no 'phontab' file in it)")
        self._tmpdir = Path(tempfile.mkdtemp(prefix="flow_omni_espeak_"))
        atexit.register(shutil.rmtree, self._tmpdir, True)
        self._private_lib = self._tmpdir / "libespeak-ng-private.so"
        shutil.copyfile(self.library_path, self._private_lib)
        self._libc = ctypes.CDLL(None)
        self._chunks: list[np.ndarray] = []
        self._words: list[tuple[int, int]] = []  # (character index, milliseconds) of each word event
        self._callback = _SynthCallback(self._collect)  # kept alive as long as self
        with self._lock:
            lib = self._open()
            try:
                self.version = self._query_version(lib)
                self._languages = self._query_languages(lib)
            finally:
                self._close(lib)
        variants_dir = self.data_path / "voices" / "!v"
        self._variants = sorted(p.name for p in variants_dir.iterdir() if p.is_file()) if variants_dir.is_dir() else []

    # ---- library lifetime ----------------------------------------------------------------

    def _open(self) -> ctypes.CDLL:
        """Map a fresh instance of the library and initialise it; caller holds the lock."""
        if not self._private_lib.is_file():  # e.g. removed by the exit of a parent process
            self._tmpdir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.library_path, self._private_lib)
        try:
            lib = ctypes.CDLL(str(self._private_lib), mode=os.RTLD_LOCAL | os.RTLD_NOW)
        except OSError as exc:
            raise EspeakError(f"cannot load libespeak-ng ({self.library_path}): {exc}") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(), _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            self._close(lib, terminate=False)
            raise EspeakError(f"espeak_Initialize failed (returned {rate}) with data folder {self.data_path}")
        if rate != ESPEAK_SAMPLE_RATE:
            self._close(lib)
            raise EspeakError(f"libespeak-ng reports {rate} Hz; this binding expects {ESPEAK_SAMPLE_RATE} Hz")
        lib.espeak_SetSynthCallback(self._callback)
        return lib

    @staticmethod
    def _close(lib: ctypes.CDLL, terminate: bool = True) -> None:
        if terminate:
            lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)

    @staticmethod
    def _query_version(lib: ctypes.CDLL) -> str:
        info = lib.espeak_Info(None)
        return info.decode() if info else "unknown"

    @staticmethod
    def _query_languages(lib: ctypes.CDLL) -> list[str]:
        voices = lib.espeak_ListVoices(None)
        names = []
        i = 0
        while voices[i]:
            ident = voices[i].contents.identifier
            if ident:
                names.append(ident.decode().split("/")[-1].lower())
            i += 1
        return sorted(set(names))

    def _collect(self, wav, n: int, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events and events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_WORD:
                self._words.append((events[i].text_position - 1, events[i].audio_position))
            i += 1
        return 0  # 0 = go on synthesising

    # ---- voices ---------------------------------------------------------------------------

    def list_languages(self) -> list[str]:
        """Language voice names usable before the ``+`` of a voice spec (e.g. ``en-gb-x-rp``)."""
        return list(self._languages)

    def list_variants(self) -> list[str]:
        """Variant names (files of ``espeak-ng-data/voices/!v``) usable after the ``+``."""
        return list(self._variants)

    def check_voice(self, voice: str | VoiceSpec, variant: str | None = None) -> VoiceSpec:
        """Parse and validate a voice spec; raise :class:`UnknownVoiceError` naming close matches."""
        spec = voice if isinstance(voice, VoiceSpec) else VoiceSpec.parse(voice, variant)
        if spec.language not in self._languages:
            close = difflib.get_close_matches(spec.language, self._languages, n=3)
            english = [x for x in self._languages if x.startswith("en")]
            raise UnknownVoiceError(
                f"unknown espeak language voice {spec.language!r} in {str(spec)!r}"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
                + f"; English ones are {english}; see Espeak().list_languages() for all {len(self._languages)}"
            )
        if spec.variant is not None and spec.variant not in self._variants:
            close = difflib.get_close_matches(spec.variant, self._variants, n=3)
            raise UnknownVoiceError(
                f"unknown espeak voice variant {spec.variant!r} in {str(spec)!r}"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
                + f"; variants are files of {self.data_path / 'voices' / '!v'}, e.g. {list(ENGLISH_VARIANTS)}"
            )
        return spec

    # ---- synthesis ------------------------------------------------------------------------

    def synthesize_native(
        self,
        text: str,
        voice: str | VoiceSpec = "en",
        variant: str | None = None,
        *,
        rate_wpm: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
    ) -> np.ndarray:
        """The raw int16 samples at 22 050 Hz, untrimmed, as espeak produces them: ``(T,)``."""
        return self._speak(text, voice, variant, rate_wpm=rate_wpm, pitch=pitch, pitch_range=pitch_range)[0]

    def _speak(
        self, text: str, voice: str | VoiceSpec, variant: str | None, *, rate_wpm: int, pitch: int, pitch_range: int
    ) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """:meth:`synthesize_native`'s samples and the word events ``(character index, milliseconds)``."""
        if not isinstance(text, str) or not text.strip():
            raise EspeakError(f"text to speak must be a non-empty string, got {text!r}")
        spec = self.check_voice(voice, variant)
        for name, value, (lo, hi) in (
            ("rate_wpm", rate_wpm, RATE_RANGE),
            ("pitch", pitch, PITCH_RANGE),
            ("pitch_range", pitch_range, PITCH_RANGE),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
                raise EspeakError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
        data = text.encode("utf-8") + b"\0"
        with self._lock:
            lib = self._open()
            try:
                self._chunks, self._words = [], []
                if lib.espeak_SetVoiceByName(str(spec).encode()) != _EE_OK:
                    raise UnknownVoiceError(f"libespeak-ng refused voice {str(spec)!r}")
                lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
                lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
                lib.espeak_SetParameter(_PARAM_RANGE, int(pitch_range), 0)
                self._libc.srand(_RAND_SEED)
                lib.espeak_ng_SetRandSeed(_RAND_SEED)
                status = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
                if status != _EE_OK:
                    raise EspeakError(f"espeak_Synth failed with status {status} for text {text[:60]!r}")
                lib.espeak_Synchronize()
                chunks, self._chunks = self._chunks, []
                words, self._words = self._words, []
            finally:
                self._close(lib)
        return (np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)), words

    def synthesize(
        self,
        text: str,
        voice: str | VoiceSpec = "en",
        variant: str | None = None,
        *,
        rate_wpm: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        sample_rate: int = TARGET_SAMPLE_RATE,
        margin_seconds: float = DEFAULT_MARGIN_SECONDS,
    ) -> torch.Tensor:
        """Speak ``text``; returns float32 mono ``(T,)`` at ``sample_rate``, trimmed to ``margin_seconds``.

        Args:
            voice: ``"en-us"`` or ``"en-us+f3"``; or give the variant separately as ``variant``.
            rate_wpm: speaking rate in words per minute, 80–450.
            pitch: base pitch, 0–99 (50 is the voice's normal pitch).
            pitch_range: intonation range, 0–99 (0 = monotone, 50 = normal).
        Raises:
            UnknownVoiceError, EspeakError: bad voice/parameters, or no audible speech came out.
        """
        return self.synthesize_aligned(
            text, voice, variant, rate_wpm=rate_wpm, pitch=pitch, pitch_range=pitch_range,
            sample_rate=sample_rate, margin_seconds=margin_seconds,
        )[0]  # fmt: skip

    def synthesize_aligned(
        self,
        text: str,
        voice: str | VoiceSpec = "en",
        variant: str | None = None,
        *,
        rate_wpm: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        sample_rate: int = TARGET_SAMPLE_RATE,
        margin_seconds: float = DEFAULT_MARGIN_SECONDS,
    ) -> tuple[torch.Tensor, list[tuple[int, float]]]:
        """:meth:`synthesize`, and when each word begins: ``(audio (T,), [(character index, seconds), …])``.

        The pairs come from espeak's word events: the index in ``text`` where a spoken word starts
        (a number read as several words gives several events) and the time its speech starts in the
        trimmed audio: character indices increasing, times not decreasing, within ``[0, duration]``.
        """
        raw, events = self._speak(text, voice, variant, rate_wpm=rate_wpm, pitch=pitch, pitch_range=pitch_range)
        loud = np.flatnonzero(np.abs(raw.astype(np.int32)) >= TRIM_THRESHOLD)
        if loud.size == 0:
            raise EspeakError(f"espeak produced no audible speech for {text[:60]!r} in voice {voice!r}")
        margin = int(round(margin_seconds * ESPEAK_SAMPLE_RATE))
        start, stop = int(loud[0]) - margin, int(loud[-1]) + 1 + margin
        body = raw[max(start, 0) : min(stop, raw.size)].astype(np.float64) / 32768.0
        audio = np.pad(body, (max(0, -start), max(0, stop - raw.size)))
        out = resample(torch.from_numpy(audio), ESPEAK_SAMPLE_RATE, sample_rate)
        duration = out.shape[-1] / sample_rate
        words: list[tuple[int, float]] = []
        for char, ms in events:
            seconds = min(max(ms / 1000 - start / ESPEAK_SAMPLE_RATE, 0.0), duration)
            if 0 <= char < len(text) and (not words or (char > words[-1][0] and seconds >= words[-1][1])):
                words.append((char, round(seconds, 4)))
        return out.to(torch.float32).clamp_(-1.0, 1.0).contiguous(), words


_DEFAULT: Espeak | None = None
_DEFAULT_LOCK = threading.Lock()


def get_espeak() -> Espeak:
    """The process-wide :class:`Espeak` (created on first use)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Espeak()
        return _DEFAULT


def synthesize(
    text: str,
    voice: str = "en",
    variant: str | None = None,
    *,
    rate_wpm: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    sample_rate: int = TARGET_SAMPLE_RATE,
    margin_seconds: float = DEFAULT_MARGIN_SECONDS,
) -> torch.Tensor:
    """:meth:`Espeak.synthesize` on the process-wide instance."""
    return get_espeak().synthesize(
        text, voice, variant, rate_wpm=rate_wpm, pitch=pitch, pitch_range=pitch_range,
        sample_rate=sample_rate, margin_seconds=margin_seconds,
    )  # fmt: skip


def list_variants() -> list[str]:
    """Variant names shipped in ``espeak-ng-data/voices/!v``."""
    return get_espeak().list_variants()


def list_languages() -> list[str]:
    """Language voice names shipped in ``espeak-ng-data/lang``."""
    return get_espeak().list_languages()
