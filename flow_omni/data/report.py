"""What a training run could not use from its data: skipped items and the run's ``data_report.txt``.

A file can fail long after the manifest was validated: validation opens only the ends of each file
by default, a file can be damaged in the middle, deleted or replaced during a run, and augmentation
can make a short clip too short for the log-mel. A dataset does not raise for such an item (that
would end a run of many hours, and a resumed run would meet the same item again); it returns a
:class:`Skipped` line instead. The collate function keeps the good items and passes the lines on in
a :class:`Collated` (whose batch is an :class:`EmptyBatch` when no item was left), and the data
module, in the main process, hands them to the run's :class:`DataReport`. That is also where
``on_error="stop"`` stops the run, with one line naming the file: an exception raised in a
data-loader worker would reach the user wrapped in the worker's traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flow_omni.checkpoint import atomic_write_text
from flow_omni.errors import AudioError, ConfigError

logger = logging.getLogger("flow_omni.data")


@dataclass(frozen=True)
class Skipped:
    """An item a dataset could not build; ``line`` names the entry and the file, and says why."""

    line: str


class EmptyBatch:
    """The batch when every item in it was skipped.

    Not ``None``: Lightning skips the whole step for a ``None`` batch, on that rank alone, and under
    DDP the other ranks would wait for its gradients forever. A training step given this runs a
    backward pass of zero instead and leaves the weights alone.
    """

    def __repr__(self) -> str:
        return "EmptyBatch()"


@dataclass
class Collated:
    """A collated batch (an :class:`EmptyBatch` when every item was skipped) and the skipped items' lines."""

    batch: Any
    skipped: list[str] = field(default_factory=list)


class DataReport:
    """The run's data problems, one line each, in the order they were met; each line is kept once.

    With ``on_error="skip"`` a new line is logged (WARNING, ``flow_omni.data`` logger) and, once
    :meth:`attach` gave it a file, appended to that file; with ``"stop"``, :meth:`add` raises
    :class:`AudioError` with the line instead.
    """

    def __init__(self, on_error: str = "skip") -> None:
        if on_error not in ("skip", "stop"):
            raise ConfigError(f"on_error must be 'skip' or 'stop', got {on_error!r}")
        self.on_error = on_error
        self.lines: list[str] = []
        self._seen: set[str] = set()
        self._path: Path | None = None

    def __len__(self) -> int:
        return len(self.lines)

    def extend(self, lines: Iterable[str]) -> None:
        """Lines found (and already logged, or raised for ``stop``) by manifest validation."""
        for line in lines:
            self._keep(line)

    def add(self, line: str) -> None:
        """A problem met while the run reads its data: stop, or keep, log and write it."""
        if self.on_error == "stop":
            raise AudioError(line)
        if self._keep(line):
            logger.warning("%s", line)

    def _keep(self, line: str) -> bool:
        if line in self._seen:
            return False
        self._seen.add(line)
        self.lines.append(line)
        if self._path is not None:
            with open(self._path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        return True

    def attach(self, path: str | Path, *, write: bool = True, keep_existing: bool = False) -> None:
        """Write every line so far to ``path`` and append later ones there.

        ``write=False`` only appends later lines (other DDP ranks: rank 0 writes the file, and the
        lines every rank finds alike before training). ``keep_existing`` first takes the lines a
        file already holds (a resumed run keeps what its first part met).
        """
        path = Path(path)
        if write:
            if keep_existing and path.is_file():
                old = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
                ours, self.lines, self._seen = self.lines, [], set()
                for line in old + ours:
                    self._keep(line)
            atomic_write_text(path, "".join(line + "\n" for line in self.lines))
        self._path = path


__all__ = ["Collated", "DataReport", "EmptyBatch", "Skipped"]
