"""The wall time of a training run as a whole, across the processes that resumed it."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import Callback


class TrainClock(Callback):
    """Wall time from the start of training, kept in every checkpoint (Lightning stores a callback's
    ``state_dict`` there and hands it back on resume).

    A resumed run starts from the time its checkpoint was written at and adds its own, so the steps
    between that checkpoint and the interruption, which it trains again, count once. A checkpoint
    written before the clock existed brings no time: :attr:`restored` stays False, and the time
    before the resume is not known.
    """

    def __init__(self) -> None:
        self.before = 0.0  # seconds up to the checkpoint this process resumed from
        self.restored = False
        self._start: float | None = None

    def seconds(self) -> float:
        """Training wall time so far, this process's share included."""
        running = time.perf_counter() - self._start if self._start is not None else 0.0
        return self.before + running

    def state_dict(self) -> dict:
        return {"seconds": self.seconds()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.before, self.restored = float(state_dict["seconds"]), True

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self.before, self._start = self.seconds(), None


__all__ = ["TrainClock"]
