"""Checkpoint directories: ``config.json`` + ``model.safetensors``, written atomically.

Layout of a directory written by :func:`save_checkpoint`::

    config.json         {"flow_omni_class": "<ClassName>", "format_version": 1, "config": {...}}
    model.safetensors   the state dict (tensors only; no pickle anywhere)

Atomicity: each file goes to a temporary name in the same directory, is fsynced, then
``os.replace``d over the final name, so an interrupted save leaves the previous checkpoint intact
rather than a half-written one. Loading checks the class tag so that a directory written by
another architecture fails with a clear message instead of a cascade of missing-key errors.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from flow_omni.errors import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
#: The ``format_version`` values this code reads. A newer writer may store things this one would
#: silently misread, so any other version is refused rather than guessed at.
SUPPORTED_FORMAT_VERSIONS = (1,)


#: How :func:`atomic_write` names its temporary file next to ``name``: ``.name.<random>.tmp``.
_TMP_PREFIX, _TMP_SUFFIX = ".", ".tmp"


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then atomically move ``tmp_path`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        # mkstemp makes the file owner-only (0600); the file it becomes should have the mode any
        # new file gets here (0666 less the umask), so that others on a shared cluster can read it.
        os.chmod(tmp_path, 0o666 & ~_umask())
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def remove_partial_writes(folder: str | Path) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` calls in ``folder`` left behind; return them.

    A process killed mid-write (SIGKILL, OOM, a lost node) cannot remove its temporary file, and a
    checkpoint's is as large as the checkpoint. Call this only while no other process can be
    writing into ``folder`` (a training run holds its folder's lock).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = sorted(p for p in folder.glob(f"{_TMP_PREFIX}*{_TMP_SUFFIX}") if p.is_file())
    for p in found:
        p.unlink(missing_ok=True)
    return found


def save_checkpoint(
    directory: str | Path,
    class_name: str,
    config: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed).

    Tensors that share storage (tied weights) are cloned, since safetensors refuses aliases.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        t = tensor.detach().cpu()
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        if ptr in seen and ptr != -1:
            t = t.clone()
        seen.add(ptr)
        tensors[name] = t.contiguous()
    meta = {"flow_omni_class": class_name, "format_version": FORMAT_VERSION, "config": config}
    if extra:
        meta.update(extra)
    # Weights first, config last: a directory with a config.json always has complete weights.
    atomic_write(
        directory / WEIGHTS_NAME, lambda p: save_file(tensors, str(p), metadata={"flow_omni_class": class_name})
    )
    atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2, sort_keys=True))
    return directory


def read_checkpoint_config(directory: str | Path, class_name: str) -> dict[str, Any]:
    """Return the stored config dict after checking that ``directory`` holds a ``class_name``."""
    directory = Path(directory)
    cfg_path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a directory; expected a checkpoint written by save_pretrained()")
    if not cfg_path.is_file():
        raise CheckpointError(
            f"{directory} has no {CONFIG_NAME}; expected a directory written by {class_name}.save_pretrained()"
        )
    try:
        meta = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({exc}); the file may be truncated") from None
    if not isinstance(meta, dict) or "flow_omni_class" not in meta:
        raise CheckpointError(
            f"{cfg_path} was not written by flow_omni (no 'flow_omni_class' field); "
            f"expected a directory written by {class_name}.save_pretrained()"
        )
    found = meta["flow_omni_class"]
    if found != class_name:
        raise CheckpointError(
            f"{directory} holds a {found} checkpoint, not a {class_name}; load it with {found}.from_pretrained()"
        )
    version = meta.get("format_version")
    if isinstance(version, bool) or version not in SUPPORTED_FORMAT_VERSIONS:
        supported = ", ".join(map(str, SUPPORTED_FORMAT_VERSIONS))
        raise CheckpointError(
            f"{cfg_path} has format_version {version!r}; this flow_omni reads format_version {supported} "
            "(a newer flow_omni may have written it)"
        )
    return meta


def load_checkpoint(directory: str | Path, class_name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Return ``(meta, state_dict)``; raise CheckpointError for a foreign or damaged checkpoint."""
    directory = Path(directory)
    meta = read_checkpoint_config(directory, class_name)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{directory} has {CONFIG_NAME} but no {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{weights} could not be read ({exc}); the file is truncated or not safetensors"
        ) from None
    return meta, state


def state_mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str | None:
    """What keeps ``state`` from loading into a module whose state dict is ``own`` (missing and unexpected
    tensors, shape mismatches), as one clause, or None when it fits."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} tensor(s) e.g. {missing[:3]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s) e.g. {unexpected[:3]}")
    if wrong:
        parts.append(f"shape mismatch for {wrong[:3]}")
    return "; ".join(parts) or None


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str | Path) -> None:
    """``load_state_dict(strict=True)`` with an error that names what did not match.

    Also refused: an integer tensor where the module holds a floating-point one (``load_state_dict``
    would cast it silently), and a weight that holds NaN or Inf (a diverged or damaged save, which would
    otherwise surface only as a model that produces nothing).
    """
    own = module.state_dict()
    mismatch = state_mismatch(own, state)
    if mismatch:
        raise CheckpointError(f"weights in {where} do not fit the model built from its config: {mismatch}")
    not_float = sorted(k for k in own if own[k].is_floating_point() and not state[k].is_floating_point())
    if not_float:
        k = not_float[0]
        raise CheckpointError(
            f"weights in {where} are not floating point: {len(not_float)} tensor(s) e.g. {k!r} hold "
            f"{state[k].dtype}, where the model has {own[k].dtype}"
        )
    weights = dict(module.named_parameters(remove_duplicate=False))
    bad = sorted(k for k in weights if k in state and not bool(torch.isfinite(state[k]).all()))
    if bad:
        raise CheckpointError(
            f"weights in {where} are not finite: {len(bad)} tensor(s) hold NaN or Inf, e.g. {bad[:3]} "
            "(saved from a run that diverged, or damaged)"
        )
    module.load_state_dict(state, strict=True)
