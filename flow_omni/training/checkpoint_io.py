"""Lightning checkpoint I/O that writes atomically and never unpickles arbitrary objects.

A ``.ckpt`` is written to a temporary file in the same folder, flushed to disk (fsync) and then
renamed over the old one, so a run killed while saving leaves the previous checkpoint intact
rather than a truncated file. Loading uses ``torch.load(weights_only=True)``: tensors, numbers,
strings and containers only (our module and data module keep their state in exactly those).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from flow_omni.checkpoint import atomic_write, state_mismatch
from flow_omni.errors import CheckpointError


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(
        self, path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return read_training_checkpoint(path, map_location)


def read_training_checkpoint(
    path: str | Path, map_location: Any | None = None, *, mmap: bool = False
) -> dict[str, Any]:
    """A ``.ckpt`` read with ``weights_only=True`` (``mmap``: tensors are read from the file when used);
    CheckpointError for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # truncated, foreign or not a torch file at all
        raise CheckpointError(
            f"{path} is not a readable training checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None


def check_resumable(module: torch.nn.Module, path: str | Path) -> None:
    """Raise CheckpointError when the weights in the ``.ckpt`` at ``path`` do not fit ``module``.

    Called before a resumed run writes anything: Lightning would find out only inside ``fit``, with a
    ``load_state_dict`` traceback, after the run had already replaced its folder's config. The file is
    memory-mapped, so only its index is read.
    """
    state = read_training_checkpoint(path, mmap=True).get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no state_dict; it is not a checkpoint written by a training run")
    mismatch = state_mismatch(module.state_dict(), state)
    if mismatch:
        raise CheckpointError(
            f"cannot resume from {path}: its weights do not fit the model this config builds ({mismatch}); "
            "resume with the config the run was started with, or start afresh with --overwrite"
        )
