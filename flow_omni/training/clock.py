"""The wall time of a training run as a whole, across the processes that resumed it."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import Callback


class TrainClock(Callback):
    """Wall time spent in ``Trainer.fit`` since the run began, kept in every checkpoint (Lightning
    stores a callback's ``state_dict`` there and hands it back on resume).

    :meth:`start` is called as ``fit`` is. A resumed run's :attr:`before` is the time its checkpoint
    kept, to which its own ``fit`` adds; the steps between that checkpoint and the interruption, which
    it trains again, so count once. A checkpoint written before the clock existed brings no time:
    :attr:`restored` then stays False, and the time before the resume is not known.
    """

    def __init__(self) -> None:
        self.before = 0.0  # seconds in fit up to the checkpoint this process resumed from
        self.restored = False
        self._start: float | None = None

    def start(self, now: float) -> None:
        """Mark the start of this process's ``fit`` (a ``time.perf_counter()`` reading)."""
        self._start = now

    def seconds(self) -> float:
        """Time in ``fit`` so far, this process's share included."""
        return self.before + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def state_dict(self) -> dict:
        return {"seconds": self.seconds()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.before, self.restored = float(state_dict["seconds"]), True


__all__ = ["TrainClock"]
