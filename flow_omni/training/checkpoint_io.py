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

from flow_omni.checkpoint import atomic_write
from flow_omni.errors import CheckpointError


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(
        self, path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        try:
            return torch.load(path, map_location=map_location or "cpu", weights_only=True)
        except Exception as exc:  # truncated, foreign or not a torch file at all
            raise CheckpointError(
                f"{path} is not a readable training checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            ) from None
