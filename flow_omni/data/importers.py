"""Importers: turn a corpus folder into manifest entries (and, optionally, a manifest file).

Three layouts are understood:

* **LibriSpeech** — ``root/<speaker>/<chapter>/<spk>-<chap>-<utt>.flac`` next to one
  ``<spk>-<chap>.trans.txt`` per chapter whose lines read ``<utt-id> TRANSCRIPT``.
* **LibriTTS** (and LibriTTS-R) — ``root/<speaker>/<chapter>/<id>.wav`` next to
  ``<id>.normalized.txt`` (preferred) or ``<id>.original.txt``.
* **wav + txt** — any folder of ``x.wav`` (or ``.flac``/``.ogg``) files, each with an ``x.txt``.

``root`` may be a split folder (``LibriSpeech/train-clean-100``) or a parent of several splits
(``LibriSpeech``): transcript files are found at any depth, and the speaker is always the name of
the folder two levels above the audio. Durations come from the file headers (``soundfile.info``),
so importing never decodes audio. Everything is visited in sorted order, so the same folder always
gives the same manifest, line for line.

Anything that cannot become an entry (audio with no transcript, a transcript line with no audio,
an empty transcript, a header soundfile cannot read, an id seen twice) is returned as an
:class:`ImportProblem` and logged at WARNING level on the ``flow_omni.data`` logger — never
silently dropped. Returned entries carry absolute audio paths; a manifest written with ``out``
stores paths relative to its own folder when the audio lies inside that folder (so the two can be
moved together), absolute otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
from tqdm.auto import tqdm

from flow_omni.data.manifest import ManifestEntry, write_manifest
from flow_omni.data.validate import soundfile_reason
from flow_omni.errors import FlowOmniError

logger = logging.getLogger("flow_omni.data")

#: Audio extensions the wav+txt importer pairs with transcripts, in order of preference.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
STYLES = ("auto", "librispeech", "libritts")

_LS_TRANS = ".trans.txt"
_TTS_TEXTS = (".normalized.txt", ".original.txt")  # preference order


class CorpusError(FlowOmniError, ValueError):
    """A corpus folder had no layout we recognise, or nothing in it could be imported."""


class CorpusNotFoundError(CorpusError, FileNotFoundError):
    """The corpus folder given to an importer does not exist."""


@dataclass(frozen=True)
class ImportProblem:
    """One file (or transcript line) that could not become a manifest entry.

    ``kind`` is a short code: ``missing_transcript``, ``missing_audio``, ``empty_text``,
    ``unreadable_audio``, ``empty_audio``, ``bad_transcript`` or ``duplicate_id``.
    """

    path: Path
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class ImportResult:
    """What an importer found: the usable entries (absolute paths) and every problem."""

    entries: list[ManifestEntry]
    problems: list[ImportProblem] = field(default_factory=list)
    style: str = ""
    #: The manifest written (when ``out`` was given), else ``None``.
    manifest: Path | None = None

    def lines(self) -> list[str]:
        """One human-readable line per problem."""
        return [str(p) for p in self.problems]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for p in self.problems:
            counts[p.kind] = counts.get(p.kind, 0) + 1
        hours = sum(e.duration or 0.0 for e in self.entries) / 3600
        text = f"{len(self.entries)} entries ({hours:.2f} h, {self.style} layout)"
        if counts:
            text += f"; {len(self.problems)} problem(s): " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        else:
            text += "; no problems"
        return text + (f"; written to {self.manifest}" if self.manifest else "")


# ---------------------------------------------------------------------------------------------
# helpers


def _check_root(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise CorpusNotFoundError(f"corpus folder {root} does not exist")
    if not root.is_dir():
        raise CorpusError(f"corpus root {root} is a file; expected a folder")
    return root.resolve()


def _walk(root: Path) -> Iterable[tuple[Path, list[str]]]:
    """``(folder, sorted file names)`` for every folder under ``root``, in sorted order."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        yield Path(dirpath), sorted(filenames)


def _clean_text(text: str) -> str:
    """Collapse all runs of whitespace (newlines included) into single spaces."""
    return " ".join(text.split())


def _read_text(path: Path) -> str:
    try:
        return _clean_text(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path}: transcript is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _duration(path: Path, problems: list[ImportProblem]) -> float | None:
    """Duration in seconds from the header, or ``None`` (and a problem) if it cannot be read."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        reason = soundfile_reason(exc)
        problems.append(ImportProblem(path, "unreadable_audio", f"soundfile cannot open this file as audio ({reason})"))
        return None
    if info.frames <= 0 or info.samplerate <= 0:
        problems.append(ImportProblem(path, "empty_audio", "audio file holds 0 frames"))
        return None
    return round(info.frames / info.samplerate, 4)


def _speaker_of(audio: Path) -> str:
    """The speaker folder: two levels above the audio (``<speaker>/<chapter>/<file>``)."""
    return audio.parent.parent.name


def _finish(
    entries: list[ManifestEntry],
    problems: list[ImportProblem],
    *,
    style: str,
    root: Path,
    out: str | Path | None,
) -> ImportResult:
    # Ids must be unique in a manifest; keep the first (in sorted order) and report the rest.
    seen: dict[str, str] = {}
    unique = []
    for e in entries:
        if e.id in seen:
            problems.append(ImportProblem(Path(e.audio), "duplicate_id", f"id {e.id} already used by {seen[e.id]}"))
            continue
        seen[e.id] = e.audio
        unique.append(e)
    for p in problems:
        logger.warning("%s", p)
    if not unique:
        shown = "; ".join(str(p) for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CorpusError(f"no usable utterance in {root} ({style} layout): {len(problems)} problem(s): {shown}{more}")
    result = ImportResult(unique, problems, style)
    if out is not None:
        out = Path(out).expanduser().resolve()
        write_manifest(out, [_relative_to(e, out.parent) for e in unique])
        result.manifest = out
    return result


def _relative_to(entry: ManifestEntry, folder: Path) -> ManifestEntry:
    """The entry with audio paths relative to ``folder`` when the audio lies inside it."""

    def rel(p: str | None) -> str | None:
        if p is None:
            return None
        try:
            return Path(p).relative_to(folder).as_posix()
        except ValueError:
            return p

    return dataclasses.replace(
        entry, audio=rel(entry.audio), answer_audio=rel(entry.answer_audio), target_audio=rel(entry.target_audio)
    )


# ---------------------------------------------------------------------------------------------
# LibriSpeech / LibriTTS


def detect_style(root: str | Path) -> str:
    """``"librispeech"`` or ``"libritts"``, from the transcript files found under ``root``.

    Raises:
        CorpusError: neither kind of transcript file is present, or both are (ambiguous).
    """
    root = _check_root(root)
    found_ls = found_tts = False
    for _, names in _walk(root):
        found_ls = found_ls or any(n.endswith(_LS_TRANS) for n in names)
        found_tts = found_tts or any(n.endswith(_TTS_TEXTS) for n in names)
        if found_ls and found_tts:
            raise CorpusError(
                f"{root} holds both LibriSpeech (*{_LS_TRANS}) and LibriTTS (*{_TTS_TEXTS[0]}) transcripts; "
                "pass style='librispeech' or style='libritts'"
            )
    if found_ls:
        return "librispeech"
    if found_tts:
        return "libritts"
    raise CorpusError(
        f"{root} has no layout we recognise: looked for LibriSpeech "
        f"(<speaker>/<chapter>/<spk>-<chap>{_LS_TRANS} next to .flac files) and LibriTTS "
        f"(<speaker>/<chapter>/<id>.wav with <id>{_TTS_TEXTS[0]} or <id>{_TTS_TEXTS[1]}); "
        "for a plain folder of x.wav + x.txt pairs use import_wav_txt"
    )


def _librispeech(root: Path, progress: bool) -> tuple[list[ManifestEntry], list[ImportProblem]]:
    entries: list[ManifestEntry] = []
    problems: list[ImportProblem] = []
    chapters = [
        (d, names)
        for d, names in _walk(root)
        if any(n.endswith(_LS_TRANS) or os.path.splitext(n)[1].lower() in (".flac", ".wav") for n in names)
    ]
    for folder, names in tqdm(chapters, desc="librispeech chapters", disable=not progress):
        audio_by_id: dict[str, Path] = {}
        for n in names:
            stem, ext = os.path.splitext(n)
            if ext.lower() in (".flac", ".wav") and stem not in audio_by_id:  # flac first in sorted order
                audio_by_id[stem] = folder / n
        transcribed: set[str] = set()
        for trans in (n for n in names if n.endswith(_LS_TRANS)):
            trans_path = folder / trans
            try:
                raw = trans_path.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as exc:
                problems.append(ImportProblem(trans_path, "bad_transcript", f"not UTF-8 text ({exc.reason})"))
                continue
            for lineno, line in enumerate(raw, start=1):
                if not line.strip():
                    continue
                parts = line.strip().split(maxsplit=1)
                utt = parts[0]
                text = _clean_text(parts[1]) if len(parts) > 1 else ""
                transcribed.add(utt)
                where = f"{trans_path.name} line {lineno}"
                if not text:
                    msg = f"{where}: utterance {utt} has an empty transcript"
                    problems.append(ImportProblem(trans_path, "empty_text", msg))
                    continue
                audio = audio_by_id.get(utt)
                if audio is None:
                    problems.append(
                        ImportProblem(
                            folder / f"{utt}.flac",
                            "missing_audio",
                            f"{where} transcribes {utt} but there is no {utt}.flac (or .wav)",
                        )
                    )
                    continue
                dur = _duration(audio, problems)
                if dur is None:
                    continue
                entries.append(
                    ManifestEntry(
                        id=utt,
                        audio=str(audio),
                        text=text,
                        speaker=_speaker_of(audio),
                        duration=dur,
                        meta={"chapter": folder.name},
                    )
                )
        for utt, audio in audio_by_id.items():
            if utt not in transcribed:
                problems.append(
                    ImportProblem(audio, "missing_transcript", f"no line for {utt} in the chapter's *{_LS_TRANS}")
                )
    return entries, problems


def _libritts(root: Path, progress: bool) -> tuple[list[ManifestEntry], list[ImportProblem]]:
    entries: list[ManifestEntry] = []
    problems: list[ImportProblem] = []
    folders = [(d, names) for d, names in _walk(root) if any(n.lower().endswith((".wav",) + _TTS_TEXTS) for n in names)]
    for folder, names in tqdm(folders, desc="libritts folders", disable=not progress):
        present = set(names)
        wav_stems = {os.path.splitext(n)[0] for n in names if n.lower().endswith(".wav")}
        for n in names:
            for suffix in _TTS_TEXTS:
                orphan = n[: -len(suffix)]
                # One report per utterance even when both .normalized.txt and .original.txt exist.
                if (
                    n.endswith(suffix)
                    and orphan not in wav_stems
                    and (suffix == _TTS_TEXTS[0] or orphan + _TTS_TEXTS[0] not in present)
                ):
                    problems.append(ImportProblem(folder / n, "missing_audio", f"transcript with no {orphan}.wav"))
            stem, ext = os.path.splitext(n)
            if ext.lower() != ".wav":
                continue
            audio = folder / n
            text_file = next((stem + s for s in _TTS_TEXTS if stem + s in present), None)
            if text_file is None:
                msg = f"no {stem}{_TTS_TEXTS[0]} or {stem}{_TTS_TEXTS[1]} next to it"
                problems.append(ImportProblem(audio, "missing_transcript", msg))
                continue
            try:
                text = _read_text(folder / text_file)
            except CorpusError as exc:
                problems.append(ImportProblem(folder / text_file, "bad_transcript", str(exc)))
                continue
            if not text:
                problems.append(ImportProblem(folder / text_file, "empty_text", f"transcript of {stem} is empty"))
                continue
            dur = _duration(audio, problems)
            if dur is None:
                continue
            meta = {"chapter": folder.name}
            if text_file.endswith(_TTS_TEXTS[1]):
                meta["text_source"] = "original"  # unnormalised: numbers and abbreviations as written
            entries.append(
                ManifestEntry(id=stem, audio=str(audio), text=text, speaker=_speaker_of(audio), duration=dur, meta=meta)
            )
    return entries, problems


def import_librispeech(
    root: str | Path,
    *,
    out: str | Path | None = None,
    style: str = "auto",
    progress: bool = True,
) -> ImportResult:
    """Import a LibriSpeech or LibriTTS folder.

    Args:
        root: the corpus folder (a split such as ``train-clean-100``, or a parent of splits).
        out: if given, also write the manifest there (paths relative to its folder when the audio
            is inside it, else absolute).
        style: ``"auto"`` (detect from the transcript files), ``"librispeech"`` or ``"libritts"``.
        progress: show a progress bar.

    Returns:
        An :class:`ImportResult`: ``entries`` sorted by path, with ``id`` the utterance id,
        ``speaker`` the speaker folder name, ``duration`` from the header, ``meta["chapter"]``;
        and ``problems``, one per skipped file or transcript line.

    Raises:
        CorpusNotFoundError: ``root`` does not exist.
        CorpusError: no recognisable layout (the message lists the layouts looked for), or
            nothing in it could be imported.
    """
    if style not in STYLES:
        raise CorpusError(f"style must be one of {STYLES}, got {style!r}")
    root = _check_root(root)
    if style == "auto":
        style = detect_style(root)
    else:
        pattern = (f"*{_LS_TRANS}",) if style == "librispeech" else tuple(f"*{t}" for t in _TTS_TEXTS)
        if not any(n.endswith(tuple(x[1:] for x in pattern)) for _, names in _walk(root) for n in names):
            raise CorpusError(f"{root} holds no {style} transcripts ({' or '.join(pattern)}); check style={style!r}")
    entries, problems = (_librispeech if style == "librispeech" else _libritts)(root, progress)
    return _finish(entries, problems, style=style, root=root, out=out)


# ---------------------------------------------------------------------------------------------
# plain folders


def import_wav_txt(
    folder: str | Path,
    *,
    recursive: bool = True,
    out: str | Path | None = None,
    speaker_from_folder: bool = False,
    progress: bool = True,
) -> ImportResult:
    """Import a folder of ``x.wav`` (or ``.flac``/``.ogg``) files, each with an ``x.txt`` transcript.

    The ``id`` is the audio path relative to ``folder`` without its extension (``sub/x``), so ids
    are unique by construction unless two audio files share a stem (``x.wav`` and ``x.flac``: the
    first in :data:`AUDIO_EXTENSIONS` order is kept, the other reported as ``duplicate_id``).
    Audio with no transcript is reported as ``missing_transcript``, a ``.txt`` with no audio as
    ``missing_audio``, an empty transcript as ``empty_text``.

    Args:
        recursive: descend into sub-folders.
        out: if given, also write the manifest there.
        speaker_from_folder: set ``speaker`` to the name of the folder holding each file (for
            ``folder/<speaker>/x.wav`` layouts); files directly in ``folder`` get no speaker.
        progress: show a progress bar.
    """
    root = _check_root(folder)
    walk = _walk(root) if recursive else [(root, sorted(n for n in os.listdir(root) if (root / n).is_file()))]
    pairs: list[tuple[Path, list[str]]] = list(walk)
    entries: list[ManifestEntry] = []
    problems: list[ImportProblem] = []
    n_audio = 0
    for d, names in tqdm(pairs, desc="folders", disable=not progress):
        present = set(names)
        by_stem: dict[str, list[str]] = {}
        for n in names:
            stem, ext = os.path.splitext(n)
            if ext.lower() in AUDIO_EXTENSIONS:
                by_stem.setdefault(stem, []).append(n)
        n_audio += len(by_stem)
        for stem in sorted(set(by_stem) | {os.path.splitext(n)[0] for n in names if n.endswith(".txt")}):
            text_path = d / f"{stem}.txt"
            audios = sorted(by_stem.get(stem, []), key=lambda n: AUDIO_EXTENSIONS.index(os.path.splitext(n)[1].lower()))
            if not audios:
                if f"{stem}.txt" in present:
                    msg = f"transcript with no audio (looked for {stem}{{{','.join(AUDIO_EXTENSIONS)}}})"
                    problems.append(ImportProblem(text_path, "missing_audio", msg))
                continue
            audio = d / audios[0]
            for other in audios[1:]:
                msg = f"{audios[0]} has the same name and so the same id; kept that one"
                problems.append(ImportProblem(d / other, "duplicate_id", msg))
            if f"{stem}.txt" not in present:
                problems.append(ImportProblem(audio, "missing_transcript", f"no {stem}.txt next to it"))
                continue
            try:
                text = _read_text(text_path)
            except CorpusError as exc:
                problems.append(ImportProblem(text_path, "bad_transcript", str(exc)))
                continue
            if not text:
                problems.append(ImportProblem(text_path, "empty_text", "transcript is empty"))
                continue
            dur = _duration(audio, problems)
            if dur is None:
                continue
            rel = audio.relative_to(root).with_suffix("").as_posix()
            speaker = d.name if speaker_from_folder and d != root else None
            entries.append(ManifestEntry(id=rel, audio=str(audio), text=text, speaker=speaker, duration=dur))
    if n_audio == 0:
        raise CorpusError(
            f"{root} holds no audio files ({', '.join(AUDIO_EXTENSIONS)}"
            f"{'' if recursive else ', not searching sub-folders'}); expected x.wav + x.txt pairs"
        )
    return _finish(entries, problems, style="wav+txt", root=root, out=out)
