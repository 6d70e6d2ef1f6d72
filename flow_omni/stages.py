"""Stage lines for long jobs: which stage runs, how long the job has run, and about how long it has left.

A job of many minutes (the demo, a fine-tune scored before and after) prints one line as each stage
starts, e.g. ``[demo 3/5] training and scoring 2 runs, 2 side by side | 4:02 elapsed, about 9:30 left``.
They are plain lines, not progress bars, so they also show with ``--no-progress`` and in a log file.

The time left comes from each stage's expected duration (seconds, None when unknown), scaled by how
this machine has done on finished stages of the same kind (the second run's training by the first's):
their measured time over their expected time. Only the same kind, because stages differ in what they
use (one core or two) and in how much of their work a cache already holds. Within a stage that reports
how far it is (``fraction``), its own rate replaces the expectation. When a stage still to come has no
expected duration, no time left is shown.

:func:`step_bar` is the one look of a progress bar over training steps (the Lightning callback of
:mod:`flow_omni.training.progress`, and the benchmark's view of runs training in other processes).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from tqdm.auto import tqdm

#: Below this share of a stage done, its own rate is too noisy to extrapolate; its expectation is used.
MIN_FRACTION = 0.05


def step_bar(total: int, *, initial: int = 0, desc: str = "train", disable: bool = False) -> tqdm:
    """A tqdm bar over optimiser steps to ``total``: ``train: 40%|████ | 200/500 [02:10<03:15, 1.5 step/s]``."""
    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=disable, dynamic_ncols=True)


def clock_time(seconds: float) -> str:
    """``95`` → ``"1:35"``, ``3725`` → ``"1:02:05"``."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


@dataclasses.dataclass
class Stage:
    """One stage of a job: its key, what the line calls it, how long it is expected to take, and its kind
    (stages of one kind are the same work on other data: their measured times rescale each other)."""

    key: str
    label: str
    expected: float | None = None  # seconds; None = unknown
    kind: str | None = None  # None = the key: a kind of its own
    started: float | None = None
    seconds: float | None = None  # measured, once finished
    skipped: bool = False


class StageReporter:
    """Prints ``[title k/n] label | elapsed, about … left`` as each of ``stages`` starts.

    ``write`` receives each line (default: ``tqdm.write``, which keeps an open progress bar intact);
    ``clock`` gives seconds (replaceable in tests).
    """

    def __init__(
        self,
        title: str,
        stages: Sequence[Stage],
        *,
        write: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        keys = [s.key for s in stages]
        if len(set(keys)) != len(keys):
            raise ValueError(f"stage keys must be unique, got {keys}")
        self.title = title
        self.stages = list(stages)
        self.write = write or tqdm.write
        self.clock = clock
        self.t0 = clock()
        self.current: Stage | None = None

    def _stage(self, key: str) -> Stage:
        for s in self.stages:
            if s.key == key:
                return s
        raise KeyError(f"no stage {key!r}; stages: {[s.key for s in self.stages]}")

    def _number(self, stage: Stage) -> str:
        return f"{self.stages.index(stage) + 1}/{len(self.stages)}"

    def _end_current(self) -> None:
        if self.current is not None:
            self.current.seconds = self.clock() - self.current.started
            self.current = None

    def start(self, key: str, detail: str = "") -> None:
        """End the running stage and start ``key``; prints its line."""
        self._end_current()
        stage = self._stage(key)
        stage.started = self.clock()
        self.current = stage
        self.write(f"[{self.title} {self._number(stage)}] {stage.label}{_detail(detail)} | {self._times()}")

    def skip(self, key: str, why: str) -> None:
        """Mark ``key`` as not needed (its work exists already); prints why. It counts for no time."""
        self._end_current()
        stage = self._stage(key)
        stage.skipped, stage.seconds = True, 0.0
        self.write(f"[{self.title} {self._number(stage)}] {stage.label}: {why}")

    def expect(self, key: str, seconds: float | None) -> None:
        """Change what ``key`` is expected to take, once something measured says better."""
        self._stage(key).expected = seconds

    def measured(self, key: str) -> float | None:
        """How long ``key`` took, once it has finished (None before, and for a skipped stage)."""
        stage = self._stage(key)
        return None if stage.skipped else stage.seconds

    def note(self, text: str, fraction: float | None = None) -> None:
        """A line within the running stage (``fraction`` of it done, when known, refines the time left)."""
        self.write(f"[{self.title}] {text} | {self._times(fraction)}")

    def finish(self, text: str = "done") -> float:
        """End the last stage; prints the total time and returns it in seconds."""
        self._end_current()
        total = self.clock() - self.t0
        self.write(f"[{self.title}] {text} in {clock_time(total)}")
        return total

    def left(self, fraction: float | None = None) -> float | None:
        """Seconds the job has left, or None when a stage still to come has no expected duration."""
        pending = [s for s in self.stages if s.seconds is None and s is not self.current]
        if any(s.expected is None for s in pending):
            return None
        rest = sum(self._speed(s) * s.expected for s in pending)
        cur = self.current
        if cur is None:
            return rest
        spent = self.clock() - cur.started
        if fraction is not None and MIN_FRACTION <= fraction <= 1.0:
            return rest + spent * (1.0 - fraction) / fraction
        if cur.expected is None:
            return None
        return rest + max(0.0, self._speed(cur) * cur.expected - spent)

    def _speed(self, stage: Stage) -> float:
        """Measured over expected time of the finished stages of ``stage``'s kind (1 before any)."""
        kind = stage.kind or stage.key
        done = [s for s in self.stages if (s.kind or s.key) == kind and s.seconds is not None and not s.skipped]
        expected = sum(s.expected or 0.0 for s in done)
        return sum(s.seconds for s in done if s.expected) / expected if expected > 0 else 1.0

    def _times(self, fraction: float | None = None) -> str:
        text = f"{clock_time(self.clock() - self.t0)} elapsed"
        left = self.left(fraction)
        return text if left is None else f"{text}, about {clock_time(left)} left"


def _detail(detail: str) -> str:
    return f": {detail}" if detail else ""


__all__ = ["MIN_FRACTION", "Stage", "StageReporter", "clock_time", "step_bar"]
