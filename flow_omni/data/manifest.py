"""The JSONL manifest: one utterance (or one question–answer pair) per line.

Schema (every line is a JSON object)::

    {"id": "s0001", "audio": "wavs/s0001.wav", "text": "the cat sat",          # required
     "speaker": "en+f3", "duration": 1.23,                                    # optional
     "answer_audio": "wavs/s0001_a.wav", "answer_text": "four",                # optional (dialogue)
     "answer_duration": 0.61,
     "target_audio": "wavs/s0001_t.wav", "target_duration": 1.05,             # optional (TTS target)
     "segments": [{"text": "…", "audio": "wavs/…"}, …],                        # optional (interleaved)
     "alignment": [[0, 0.05], [4, 0.31], [8, 0.52]],                           # optional (word onsets)
     "answer_alignment": […], "target_alignment": […],
     "meta": {...}}                                                           # optional, free-form

Relative paths are relative to the manifest's own folder, so a corpus folder can be moved or copied
as a whole. ``duration`` is in seconds; loaders use it for length bucketing without opening the
audio. ``segments`` carries a GLM-4-Voice-style interleaved sample: a document cut into spans, some
of which are given as speech (``audio`` set) and the rest as text.

``target_audio`` is ``text`` spoken in the voice a model should answer in (the synthetic corpus's
one output voice), while ``audio`` may be any speaker: a text-to-speech (T2A) target is
``target_audio`` when it is set and ``audio`` otherwise (:attr:`ManifestEntry.t2a_audio`).
Manifests without it (imported corpora, corpora built before it existed) read as before.

``alignment`` gives when each spoken word of ``text`` begins in ``audio``: ``[character index, seconds]``
pairs, increasing in both (the synthetic corpus takes them from espeak; a forced aligner gives them
for recorded speech). ``answer_alignment`` and ``target_alignment`` do the same for ``answer_text`` in
``answer_audio`` and ``text`` in ``target_audio``. The ``aligned`` layout needs them for its speech
targets (:attr:`ManifestEntry.t2a_alignment`, ``answer_alignment``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flow_omni.checkpoint import atomic_write_text
from flow_omni.errors import FlowOmniError
from flow_omni.layout import alignment_problem

REQUIRED_KEYS = ("id", "audio", "text")


class ManifestError(FlowOmniError, ValueError):
    """A manifest line was not valid JSON, missed a required key, or had a key we do not know."""


class ManifestNotFoundError(ManifestError, FileNotFoundError):
    """The manifest file does not exist."""


@dataclass
class Segment:
    """One span of an interleaved sample: text, and (if spoken) the audio of that text."""

    text: str
    audio: str | None = None


@dataclass
class ManifestEntry:
    id: str
    audio: str
    text: str
    speaker: str | None = None
    duration: float | None = None
    answer_audio: str | None = None
    answer_text: str | None = None
    answer_duration: float | None = None
    target_audio: str | None = None
    target_duration: float | None = None
    segments: list[Segment] | None = None
    alignment: list[list] | None = None
    answer_alignment: list[list] | None = None
    target_alignment: list[list] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def t2a_audio(self) -> str:
        """The audio of ``text`` to train or score text-to-speech against: ``target_audio`` if set."""
        return self.target_audio if self.target_audio is not None else self.audio

    @property
    def t2a_duration(self) -> float | None:
        """The duration of :attr:`t2a_audio` (seconds), if the manifest gives it."""
        return self.target_duration if self.target_audio is not None else self.duration

    @property
    def t2a_alignment(self) -> list[list] | None:
        """The word onsets of ``text`` in :attr:`t2a_audio`, if the manifest gives them."""
        return self.target_alignment if self.target_audio is not None else self.alignment

    def to_dict(self) -> dict[str, Any]:
        """The JSON object for this entry; ``None`` fields are left out to keep lines short."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None or (f.name == "meta" and not v):
                continue
            if f.name == "segments":
                v = [{k: x for k, x in dataclasses.asdict(s).items() if x is not None} for s in v]
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "manifest") -> ManifestEntry:
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ManifestError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(known)}")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ManifestError(f"{where}: missing required key(s) {missing}")
        data = dict(data)
        for k in ("id", "audio", "text"):
            if not isinstance(data[k], str):
                raise ManifestError(f"{where}: {k!r} must be a string, got {data[k]!r}")
        if data.get("segments") is not None:
            segs = data["segments"]
            if not isinstance(segs, list) or not all(isinstance(s, dict) and "text" in s for s in segs):
                raise ManifestError(f"{where}: 'segments' must be a list of objects with a 'text' key")
            data["segments"] = [Segment(text=s["text"], audio=s.get("audio")) for s in segs]
        for key, text_key in (("alignment", "text"), ("answer_alignment", "answer_text"), ("target_alignment", "text")):
            if data.get(key) is not None:
                problem = alignment_problem(data[key], data.get(text_key))
                if problem:
                    raise ManifestError(f"{where}: {key!r} {problem}")
        return cls(**data)

    def resolve(self, root: str | Path) -> ManifestEntry:
        """A copy whose relative audio paths are made absolute against ``root``."""

        def fix(p: str | None) -> str | None:
            if p is None or os.path.isabs(p):
                return p
            return str(Path(root) / p)

        segs = None if self.segments is None else [Segment(s.text, fix(s.audio)) for s in self.segments]
        return dataclasses.replace(
            self,
            audio=fix(self.audio),
            answer_audio=fix(self.answer_audio),
            target_audio=fix(self.target_audio),
            segments=segs,
        )


#: Bytes read to tell a text manifest from a binary file (an audio file or an archive given by mistake).
_SNIFF_BYTES = 8192


def check_manifest_path(path: str | Path) -> Path:
    """``path`` as a Path if it is a file that may be a manifest: :class:`ManifestNotFoundError` when it
    does not exist, :class:`ManifestError` when it holds NUL bytes (an audio file or an archive given in
    its place, which no text has)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestNotFoundError(f"manifest {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    with open(path, "rb") as fh:
        if b"\0" in fh.read(_SNIFF_BYTES):
            raise ManifestError(
                f"{path} is a binary file, not a manifest; expected UTF-8 JSON lines, one object a line"
            )
    return path


def iter_manifest(path: str | Path) -> Iterator[tuple[int, ManifestEntry | ManifestError]]:
    """Yield ``(line_number, entry or the error for that line)``; blank lines are skipped.

    Errors are yielded, not raised, so a validator can report every bad line in one pass; a line that is
    not UTF-8 is such an error.

    Raises:
        ManifestNotFoundError, ManifestError: from :func:`check_manifest_path`, before any line.
    """
    path = check_manifest_path(path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield (
                    lineno,
                    ManifestError(f"{where}: not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1})"),
                )
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, ManifestError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            try:
                yield lineno, ManifestEntry.from_dict(obj, where)
            except ManifestError as exc:
                yield lineno, exc


def read_manifest(path: str | Path, *, resolve: bool = True) -> list[ManifestEntry]:
    """All entries of a manifest; the first malformed line raises :class:`ManifestError`.

    With ``resolve`` (default), relative audio paths are made absolute against the manifest folder.
    """
    root = Path(path).resolve().parent
    entries = []
    for _, item in iter_manifest(path):
        if isinstance(item, ManifestError):
            raise item
        entries.append(item.resolve(root) if resolve else item)
    return entries


def write_manifest(path: str | Path, entries: Iterable[ManifestEntry]) -> Path:
    """Write entries as JSONL atomically (a crash never leaves half a manifest)."""
    text = "".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in entries)
    atomic_write_text(path, text)
    return Path(path)
