"""A training progress bar that counts optimiser steps to ``max_steps``, with an ETA.

Lightning's own bar counts batches within an epoch, and a run here is bounded by steps with an
open number of epochs, so it shows ``Epoch 31/-2`` and no time left. This one shows
``step 1200/3000 [12:40<19:01, loss 0.83]`` and starts at the resumed step after a resume.
"""

from __future__ import annotations

import contextlib
import logging

from lightning.pytorch.callbacks import Callback
from tqdm.auto import tqdm

from flow_omni.stages import step_bar


class StepProgress(Callback):
    """tqdm over optimiser steps on rank 0; the postfix is the last logged training loss."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.bar = step_bar(trainer.max_steps, initial=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.bar is None:
            return
        self.bar.update(trainer.global_step - self.bar.n)
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            self.bar.set_postfix_str(f"loss {float(loss):.3g}", refresh=False)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class DropLightningTip(logging.Filter):
    """Drops Lightning's advertisement for its cloud logger, printed at the start of every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


@contextlib.contextmanager
def lightning_tip_dropped():
    """Lightning's cloud-logger tip is filtered from its rank-zero log inside this block."""
    log, tip = logging.getLogger("lightning.pytorch.utilities.rank_zero"), DropLightningTip()
    log.addFilter(tip)
    try:
        yield
    finally:
        log.removeFilter(tip)


__all__ = ["DropLightningTip", "StepProgress", "lightning_tip_dropped"]
