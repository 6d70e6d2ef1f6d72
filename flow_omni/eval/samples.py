"""Sample outputs kept for listening: the WAVs an evaluation writes and ``samples.json``, what was said in them.

An evaluation that keeps samples writes, per model, a folder of WAVs (the input as heard under each
condition, the model's speech) and ``samples.json``: one record per (task, item, condition) with the
reference text, the files, and the texts that go with them (the model's text stream; what Whisper or
the model's own ASR heard in its speech). :func:`listening` lays the records of several models side
by side for ``report.html``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from flow_omni.audio.io import save_audio
from flow_omni.checkpoint import atomic_write_text
from flow_omni.eval.document import Clip, Listening, ListeningItem, ListeningRow

SAMPLES = "samples.json"

#: The order of the tasks on the page: speech in and out first, as it is the one to listen to.
TASK_ORDER = ("qa", "tts", "asr")
#: The tasks whose output is speech (a missing output file means the model stayed silent).
SPEAKS = ("qa", "tts")
#: Per task: the column of the input, and the record's texts shown under each output, with their labels.
INPUT_LABEL = {"qa": "question as heard", "tts": "input", "asr": "input as heard"}
TEXT_LABELS = {
    "qa": (("text", "text answer"), ("heard", "Whisper hears")),
    "tts": (("heard", "Whisper hears"), ("own", "its own ASR hears")),
    "asr": (("text", "transcript"),),
}


class SampleLog:
    """The sample WAVs and ``samples.json`` of one model, in ``wav_dir``; ``seed``: the training seed of the
    model, stored with the records when given (a report names the seed its samples come from)."""

    def __init__(self, wav_dir: Path, sample_rate: int, seed: int | None = None):
        self.dir = Path(wav_dir)
        self.sample_rate = sample_rate
        self.seed = seed
        self.items: list[dict] = []

    def save(self, name: str, audio: torch.Tensor) -> str:
        """Write ``audio`` as ``name`` in the folder; returns ``name`` (what a record refers to)."""
        save_audio(self.dir / name, audio, self.sample_rate)
        return name

    def add(self, task: str, condition: str, item_id: str, ref: str, **fields) -> dict:
        """A record; ``fields``: ``input`` / ``output`` (file names from :meth:`save`), ``prompt`` (the text of
        a spoken question), ``text`` (the model's text stream), ``heard`` (Whisper's transcript of its
        speech), ``own`` (its own ASR of its speech), ``data`` (the manifest the item came from)."""
        record = {"task": task, "condition": condition, "id": item_id, "ref": ref, **fields}
        self.items.append(record)
        return record

    def write(self) -> Path:
        seed = {} if self.seed is None else {"seed": self.seed}
        atomic_write_text(self.dir / SAMPLES, json.dumps({**seed, "items": self.items}, indent=1))
        return self.dir / SAMPLES


def sample_seed(wav_dir: Path) -> int | None:
    """The training seed that ``wav_dir/samples.json`` names; None when it names none (or is not there)."""
    path = Path(wav_dir) / SAMPLES
    return json.loads(path.read_text()).get("seed") if path.is_file() else None


def read_samples(wav_dir: Path, conditions: Sequence[str] = ()) -> list[dict]:
    """The records in ``wav_dir/samples.json``; for a folder written before that file existed, the records its
    WAV names give (no texts), with ``conditions`` to tell a condition from an item id in a name."""
    path = Path(wav_dir) / SAMPLES
    if path.is_file():
        return json.loads(path.read_text())["items"]
    tags = {c.replace("@", "_"): c for c in conditions}
    records: dict[tuple, dict] = {}
    for wav in sorted(Path(wav_dir).glob("*.wav")):
        stem = wav.stem
        for prefix, task, field in FILE_NAMES:
            if not stem.startswith(prefix):
                continue
            rest = stem[len(prefix) :]
            if task == "tts":
                cond, item = "clean", rest
            else:
                tag = max((t for t in tags if rest.startswith(t + "_")), key=len, default=None)
                if tag is None:
                    break
                cond, item = tags[tag], rest[len(tag) + 1 :]
            record = records.setdefault((task, cond, item), {"task": task, "condition": cond, "id": item, "ref": ""})
            record[field] = wav.name
            break
    return list(records.values())


#: How the sample WAVs are named: ``<prefix><condition with @ as _>_<id>.wav`` (TTS: no condition).
FILE_NAMES = (
    ("input_", "asr", "input"),
    ("qa_question_", "qa", "input"),
    ("qa_answer_", "qa", "output"),
    ("tts_output_", "tts", "output"),
)


def _title(task: str, first: dict) -> str:
    where = f"{first['data']}, " if first.get("data") else ""
    said = f": “{first['ref']}”" if first["ref"] else ""
    if task == "qa":
        asked = f": “{first['prompt']}”" if first.get("prompt") else ""
        answer = f" (expected answer: “{first['ref']}”)" if first["ref"] else ""
        return f"Spoken QA, {where}{first['id']}{asked}{answer}"
    name = "TTS, text in" if task == "tts" else "ASR"
    return f"{name}, {where}{first['id']}{said}"


def listening(out: Path, models: Mapping[str, Path], conditions: Sequence[str] = ()) -> Listening | None:
    """The sample records of ``models`` (name → folder holding ``samples.json``, inside ``out``) side by side.

    The inputs are taken from the first model that kept one: every model hears the same input (noise is
    seeded by the item and the condition). None when no model kept samples. ``conditions``: see
    :func:`read_samples`."""
    groups: dict[tuple, dict[str, dict[str, dict]]] = {}
    for name, folder in models.items():
        for r in read_samples(folder, conditions):
            rows = groups.setdefault((r["task"], r.get("data", ""), r["id"]), {})
            rows.setdefault(r["condition"], {})[name] = r
    if not groups:
        return None
    rel = {name: Path(folder).relative_to(out).as_posix() for name, folder in models.items()}
    items = []
    for task, data, item_id in sorted(groups, key=lambda k: TASK_ORDER.index(k[0])):
        conds = groups[(task, data, item_id)]
        rows = []
        for cond, by_model in conds.items():
            heard = next(((n, r["input"]) for n, r in by_model.items() if r.get("input")), None)
            outputs = {
                n: Clip(
                    f"{rel[n]}/{r['output']}" if r.get("output") else None,
                    [(label, r[key]) for key, label in TEXT_LABELS[task] if r.get(key) is not None],
                    note="no speech" if task in SPEAKS and not r.get("output") else None,
                )
                for n, r in by_model.items()
            }
            rows.append(ListeningRow(cond, Clip(f"{rel[heard[0]]}/{heard[1]}") if heard else None, outputs))
        first = next(iter(next(iter(conds.values())).values()))
        items.append(ListeningItem(_title(task, first), INPUT_LABEL[task], rows))
    return Listening(list(models), items)
