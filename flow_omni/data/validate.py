"""Validate a JSONL manifest line by line, with one clear report line per problem.

Checked for every line:

* the line is UTF-8 text (``bad_encoding``), is JSON and fits the schema of :mod:`flow_omni.data.manifest`
  (``bad_json``, ``bad_schema``, ``unknown_key``, ``missing_key``); its id is not empty (``empty_id``) and was not
  used by an earlier line (``duplicate_id``);
* ``text`` is not empty or whitespace, nor ``answer_text`` when ``answer_audio`` is set, nor any
  segment's text (``empty_text``);
* every audio file named (``audio``, ``answer_audio``, ``target_audio``, each segment's ``audio``) exists
  (``missing_file``) and, with ``check_audio``, opens (``unreadable_audio``), is not truncated
  (``truncated_audio``), holds frames (``empty_audio``) with finite samples (``non_finite_audio``)
  at the expected rate (``wrong_sample_rate``, only when ``sample_rate`` is given);
* ``duration``/``answer_duration``/``target_duration`` agree with the files within
  :data:`DURATION_TOLERANCE` (``duration_mismatch``), and ``audio``/``answer_audio``/``target_audio``
  respect ``min_duration``/``max_duration``
  (``too_short``/``too_long``; measured from the file, or taken from the duration fields when
  ``check_audio`` is off);
* with ``check_audio``, every file is long enough for the log-mel that training computes from it
  (``too_short``: at least :attr:`~flow_omni.audio.mel.MelConfig.min_samples` once resampled), so
  that a manifest that validates clean trains without a file being rejected.

Audio checks are cheap by default: the header via ``soundfile.info``, then the first and last
:data:`EDGE_FRAMES` frames are decoded — that catches garbage files, WAVs whose header promises
more data than the file holds, and cut-off FLAC/Ogg streams, without decoding whole corpora.
``check_audio="full"`` decodes every file completely (finds corruption in the middle, too). Good
entries missing ``duration``/``answer_duration``/``target_duration`` get them filled in from the
headers that were read.

With ``on_error="skip"`` every problem is also logged, as it is found, at WARNING level on the
``flow_omni.data`` logger (Python's last-resort handler prints it to stderr even when logging is not
configured), so skipping is never silent. With ``on_error="stop"`` the first problem raises
:class:`~flow_omni.data.manifest.ManifestError`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from flow_omni.audio.io import data_shortfall
from flow_omni.audio.mel import MelConfig
from flow_omni.data.manifest import (
    REQUIRED_KEYS,
    ManifestEntry,
    ManifestError,
    ManifestNotFoundError,
    check_manifest_path,
    iter_manifest,
)
from flow_omni.errors import ConfigError

logger = logging.getLogger("flow_omni.data")

#: Largest allowed gap (seconds) between a ``duration`` field and the file it describes.
DURATION_TOLERANCE = 0.1
#: Frames decoded at each end of a file by the cheap corruption check.
EDGE_FRAMES = 1024
_BLOCK = 1 << 16


@dataclass(frozen=True)
class Problem:
    """One problem on one manifest line. ``kind`` is a short code (see the module docstring)."""

    line: int
    id: str | None
    kind: str
    message: str

    def format(self, source: str) -> str:
        """``"train.jsonl:7 (id s0007): missing audio file wavs/s0007.wav"``."""
        who = f" (id {self.id})" if self.id is not None else ""
        return f"{source}:{self.line}{who}: {self.message}"


@dataclass
class ValidationReport:
    """The outcome of :func:`validate_manifest`."""

    #: The manifest as named by the caller (used as the prefix of every report line).
    source: str
    #: Entries with no problem, in file order, audio paths made absolute.
    entries: list[ManifestEntry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    #: Non-blank lines read.
    n_lines: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """One human-readable line per problem, in file order."""
        return [p.format(self.source) for p in self.problems]

    def counts(self) -> dict[str, int]:
        """Number of problems of each kind."""
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + 1
        return dict(sorted(out.items()))

    def summary(self) -> str:
        """E.g. ``"train.jsonl: 97 of 100 lines usable (0.42 h of audio); 3 problem(s) on 3 line(s):
        1 empty_text, 2 missing_file"``."""
        text = f"{self.source}: {len(self.entries)} of {self.n_lines} lines usable"
        timed = [e.duration for e in self.entries if e.duration is not None]
        if timed:
            hours = sum(timed) / 3600
            some = "" if len(timed) == len(self.entries) else f" in the {len(timed)} with a duration"
            text += f" ({hours:.2f} h of audio{some})"
        if not self.problems:
            return text + "; no problems"
        bad_lines = len({p.line for p in self.problems})
        kinds = ", ".join(f"{n} {k}" for k, n in self.counts().items())
        return text + f"; {len(self.problems)} problem(s) on {bad_lines} line(s): {kinds}"


def soundfile_reason(exc: Exception) -> str:
    """libsndfile's own words for a failure (``"Format not recognised."``), without the file path."""
    return str(getattr(exc, "error_string", None) or exc)


class _AudioProblem(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class _AudioInfo:
    samplerate: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.samplerate


def _probe_audio(path: Path, shown: str, full: bool) -> _AudioInfo:
    """Header facts of an audio file, after checking it decodes; raise ``_AudioProblem`` if not."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        reason = soundfile_reason(exc)
        raise _AudioProblem("unreadable_audio", f"cannot open {shown} as audio ({reason})") from None
    if info.samplerate <= 0:
        raise _AudioProblem("unreadable_audio", f"{shown} has an invalid sample rate {info.samplerate}")
    shortfall = data_shortfall(info.extra_info, info.samplerate)
    if shortfall is not None:
        raise _AudioProblem("truncated_audio", f"{shown} is truncated: {shortfall}")
    if info.frames <= 0:
        raise _AudioProblem("empty_audio", f"{shown} holds 0 audio frames")
    try:
        with sf.SoundFile(str(path)) as fh:
            if full:
                got = 0
                for block in fh.blocks(blocksize=_BLOCK, dtype="float32", always_2d=True):
                    got += len(block)
                    if not np.isfinite(block).all():
                        at = got / info.samplerate
                        raise _AudioProblem("non_finite_audio", f"{shown} contains NaN/Inf samples before {at:.2f} s")
                edges = None
            else:
                n = min(EDGE_FRAMES, info.frames)
                head = fh.read(n, dtype="float32", always_2d=True)
                fh.seek(info.frames - n)
                tail = fh.read(n, dtype="float32", always_2d=True)
                got = len(tail) + info.frames - n if len(head) == n else len(head)
                edges = (head, tail)
    except _AudioProblem:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = soundfile_reason(exc)
        raise _AudioProblem(
            "unreadable_audio", f"cannot decode {shown} ({reason}); the file is probably truncated or corrupt"
        ) from None
    if got < info.frames:
        raise _AudioProblem(
            "truncated_audio",
            f"{shown} is truncated: its header declares {info.frames} frames but only {got} could be decoded",
        )
    if edges is not None and not all(np.isfinite(x).all() for x in edges):
        raise _AudioProblem("non_finite_audio", f"{shown} contains NaN/Inf samples")
    return _AudioInfo(info.samplerate, info.frames)


def _schema_kind(raw: bytes) -> tuple[str, str | None]:
    """Classify a line iter_manifest rejected: ``(kind, id if one can be read)``."""
    try:
        obj: Any = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "bad_encoding", None
    except json.JSONDecodeError:
        return "bad_json", None
    if not isinstance(obj, dict):
        return "bad_schema", None
    ident = obj.get("id") if isinstance(obj.get("id"), str) else None
    known = set(ManifestEntry.__dataclass_fields__)
    if set(obj) - known:
        return "unknown_key", ident
    if any(k not in obj for k in REQUIRED_KEYS):
        return "missing_key", ident
    return "bad_schema", ident


def validate_manifest(
    path: str | Path,
    *,
    on_error: str = "skip",
    check_audio: bool | str = True,
    sample_rate: int | None = None,
    max_duration: float | None = None,
    min_duration: float | None = None,
    mel: MelConfig | None = None,
    progress: bool = False,
) -> ValidationReport:
    """Check every line of a manifest; return the good entries and one :class:`Problem` per fault.

    Args:
        path: the JSONL manifest; relative audio paths are resolved against its folder.
        on_error: ``"skip"`` — keep going, log each problem (WARNING, ``flow_omni.data`` logger)
            and return them all; ``"stop"`` — raise :class:`ManifestError` at the first problem.
        check_audio: ``True`` opens each file (header plus the first and last frames); ``"full"``
            decodes each file completely; ``False`` only checks that files exist.
        sample_rate: if given, files at another rate are reported (``wrong_sample_rate``).
        max_duration, min_duration: limits in seconds on ``audio``, ``answer_audio`` and ``target_audio``.
        mel: the log-mel the files will be featurised with (default: the Vocos-24k one); files too
            short for it are reported (``too_short``, only when ``check_audio`` opens them).
        progress: show a progress bar over lines.

    Returns:
        A :class:`ValidationReport`; an entry is kept only if its line had no problem at all.

    Raises:
        ManifestNotFoundError: the manifest does not exist.
        ManifestError: with ``on_error="stop"``, at the first problem (naming line, id and reason).
        ConfigError: an invalid argument.
    """
    if on_error not in ("skip", "stop"):
        raise ConfigError(f"on_error must be 'skip' or 'stop', got {on_error!r}")
    if check_audio not in (True, False, "full"):
        raise ConfigError(f"check_audio must be True, False or 'full', got {check_audio!r}")
    limits = (("max_duration", max_duration), ("min_duration", min_duration), ("sample_rate", sample_rate))
    for name, value in limits:
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a positive number or None, got {value!r}")
    if max_duration is not None and min_duration is not None and min_duration > max_duration:
        raise ConfigError(f"min_duration {min_duration} is larger than max_duration {max_duration}")

    path = check_manifest_path(path)
    checker = _Checker(
        path,
        on_error=on_error,
        check_audio=check_audio,
        sample_rate=sample_rate,
        max_duration=max_duration,
        min_duration=min_duration,
        mel=mel or MelConfig(),
    )
    # A second reader walks the file in step with iter_manifest, so a rejected line can be
    # classified (and its id shown) without holding the whole manifest in memory.
    # Both read bytes and split at b"\n" only, so their line numbers agree whatever the file holds.
    with open(path, "rb") as raw_fh:
        raw_lineno = 0
        lines = tqdm(iter_manifest(path), desc=f"validate {path.name}", unit=" lines", disable=not progress)
        for lineno, item in lines:
            if isinstance(item, ManifestError):
                raw = b""
                while raw_lineno < lineno:
                    raw = raw_fh.readline()
                    raw_lineno += 1
                checker.rejected_line(lineno, item, raw)
            else:
                checker.entry(lineno, item)
    return checker.report


class _Checker:
    """The per-line checks of :func:`validate_manifest`, accumulating a :class:`ValidationReport`."""

    def __init__(
        self,
        path: Path,
        *,
        on_error: str,
        check_audio: bool | str,
        sample_rate: int | None,
        max_duration: float | None,
        min_duration: float | None,
        mel: MelConfig,
    ) -> None:
        self.path = path
        self.root = path.resolve().parent
        self.on_error = on_error
        self.check_audio = check_audio
        self.sample_rate = sample_rate
        self.max_duration = max_duration
        self.min_duration = min_duration
        self.mel = mel
        self.report = ValidationReport(source=str(path))
        self.seen_ids: dict[str, int] = {}
        self.probed: dict[Path, _AudioInfo | _AudioProblem] = {}  # a file named by several lines is opened once
        self.here: list[Problem] = []  # problems of the current line

    def flag(self, problem: Problem) -> None:
        line = problem.format(self.report.source)
        if self.on_error == "stop":
            raise ManifestError(line)
        logger.warning("%s", line)
        self.here.append(problem)

    def rejected_line(self, lineno: int, error: ManifestError, raw: bytes) -> None:
        self.report.n_lines += 1
        kind, ident = _schema_kind(raw)
        msg, prefix = str(error), f"{self.path}:{lineno}: "  # iter_manifest's own "where" prefix
        self.here = []
        self.flag(Problem(lineno, ident, kind, msg[len(prefix) :] if msg.startswith(prefix) else msg))
        self.report.problems += self.here

    def entry(self, lineno: int, e: ManifestEntry) -> None:
        self.report.n_lines += 1
        self.here = []

        def flag(kind: str, message: str) -> None:
            self.flag(Problem(lineno, e.id, kind, message))

        if not e.id.strip():
            flag("empty_id", "'id' is empty; every line needs a unique id")
        elif e.id in self.seen_ids:
            flag("duplicate_id", f"duplicate id {e.id!r}: already used on line {self.seen_ids[e.id]}")
        else:
            self.seen_ids[e.id] = lineno

        if not e.text.strip():
            flag("empty_text", "transcript 'text' is empty")
        if e.answer_audio is not None and not (e.answer_text or "").strip():
            flag("empty_text", "answer_audio is set but answer_text is empty")
        for i, seg in enumerate(e.segments or []):
            if not isinstance(seg.text, str) or not seg.text.strip():
                flag("empty_text", f"segments[{i}].text is empty")

        durations: dict[str, float | None] = {}
        for name in ("duration", "answer_duration", "target_duration"):
            value = getattr(e, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0
            ):
                flag("bad_schema", f"{name!r} must be a non-negative number of seconds, got {value!r}")
                value = None
            durations[name] = value

        files: list[tuple[str, Any, float | None, bool]] = [("audio", e.audio, durations["duration"], True)]
        if e.answer_audio is not None:
            files.append(("answer_audio", e.answer_audio, durations["answer_duration"], True))
        if e.target_audio is not None:
            files.append(("target_audio", e.target_audio, durations["target_duration"], True))
        for i, seg in enumerate(e.segments or []):
            if seg.audio is not None:
                files.append((f"segments[{i}].audio", seg.audio, None, False))
        measured = {label: self.audio_file(label, raw, dur, limited, flag) for label, raw, dur, limited in files}

        if self.here:
            self.report.problems += self.here
            return
        # Durations the manifest left out are filled in from the headers just read, so length
        # bucketing downstream need not open the files again.
        if e.duration is None and measured.get("audio") is not None:
            e.duration = round(measured["audio"], 4)
        if e.answer_audio is not None and e.answer_duration is None and measured.get("answer_audio") is not None:
            e.answer_duration = round(measured["answer_audio"], 4)
        if e.target_audio is not None and e.target_duration is None and measured.get("target_audio") is not None:
            e.target_duration = round(measured["target_audio"], 4)
        self.report.entries.append(e.resolve(self.root))

    def audio_file(self, label: str, raw: Any, declared: float | None, limited: bool, flag) -> float | None:
        """Check one referenced audio file; return its measured duration (``None`` if not opened)."""
        if not isinstance(raw, str) or not raw.strip():
            flag("missing_file", f"{label} path is empty or not a string ({raw!r})")
            return None
        file = Path(raw) if os.path.isabs(raw) else self.root / raw
        where = "" if os.path.isabs(raw) else f" (looked for {file})"
        if not file.is_file():
            if file.is_dir():
                flag("missing_file", f"{label} {raw} is a folder, not an audio file{where}")
            else:
                flag("missing_file", f"missing {label} file {raw}{where}")
            return None
        measured = None
        length = declared
        if self.check_audio:
            if file not in self.probed:
                try:
                    self.probed[file] = _probe_audio(file, raw, full=self.check_audio == "full")
                except _AudioProblem as exc:
                    self.probed[file] = exc
            res = self.probed[file]
            if isinstance(res, _AudioProblem):
                flag(res.kind, res.message if label == "audio" else f"{label}: {res.message}")
                return None
            length = measured = res.duration
            # load_audio resamples T frames to ceil(T * new / old) samples; the log-mel needs min_samples.
            samples = math.ceil(res.frames * self.mel.sample_rate / res.samplerate)
            if samples < self.mel.min_samples:
                flag(
                    "too_short",
                    f"{label} {raw} holds {res.frames} samples at {res.samplerate} Hz ({res.duration:.3f} s); "
                    f"its log-mel needs at least {self.mel.min_samples} samples at {self.mel.sample_rate} Hz "
                    f"({self.mel.min_samples / self.mel.sample_rate:.3f} s)",
                )
            if self.sample_rate is not None and res.samplerate != self.sample_rate:
                flag("wrong_sample_rate", f"{label} {raw} is at {res.samplerate} Hz; expected {self.sample_rate} Hz")
            if declared is not None and abs(declared - res.duration) > DURATION_TOLERANCE:
                name = {"audio": "duration", "answer_audio": "answer_duration"}.get(label, "target_duration")
                flag(
                    "duration_mismatch",
                    f"{name} says {declared:.2f} s but {raw} is {res.duration:.2f} s long "
                    f"(tolerance {DURATION_TOLERANCE} s)",
                )
        if limited and length is not None:
            if self.max_duration is not None and length > self.max_duration:
                flag("too_long", f"{label} {raw} is {length:.2f} s long; max_duration is {self.max_duration:g} s")
            if self.min_duration is not None and length < self.min_duration:
                flag("too_short", f"{label} {raw} is {length:.2f} s long; min_duration is {self.min_duration:g} s")
        return measured


# ManifestNotFoundError is named here too: it was defined in this module before read_manifest raised it.
__all__ = [
    "DURATION_TOLERANCE",
    "EDGE_FRAMES",
    "ManifestNotFoundError",
    "Problem",
    "ValidationReport",
    "soundfile_reason",
    "validate_manifest",
]
