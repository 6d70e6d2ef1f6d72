"""Checks of what a user passes in, shared by the library and the ``flow-omni`` commands: numbers within a
range, and the places a command will write to.

A command checks its output paths before it reads, computes or trains anything: a typo in ``-o`` found
only when the result is written costs all the work before it, and the writing library reports it as a
traceback of its own. A missing folder on the way is not an error: every writer of the library makes
the folders of the path it writes (as ``mkdir -p`` would), so the check is that they can be made.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Collection
from pathlib import Path

from flow_omni.errors import ConfigError, OutputPathError


def check_number(
    value: object, name: str, *, low: float | None = None, high: float | None = None, low_open: bool = False
) -> float:
    """``value`` as a float when it is a finite real number within ``[low, high]`` (``(low, high]`` with
    ``low_open``); otherwise :class:`ConfigError`, e.g. ``"--speed must be finite, > 0 and <= 10, got 0.0"``."""
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"<= {high:g}")
    wanted = "finite" + (", " + " and ".join(bounds) if bounds else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number ({wanted}), got {value!r}")
    v = float(value)
    too_low = low is not None and (v <= low if low_open else v < low)
    if not math.isfinite(v) or too_low or (high is not None and v > high):
        raise ConfigError(f"{name} must be {wanted}, got {value!r}")
    return v


def check_output_file(path: str | Path, what: str = "output", suffixes: Collection[str] | None = None) -> Path:
    """``path`` as a Path when a file can be written there; otherwise :class:`OutputPathError`.

    Refused: an existing folder, an extension not in ``suffixes`` (lower case, with the dot; None takes
    any), an existing file the user made read-only, and a place that cannot be written (a file on the
    way, or no permission to write in the nearest existing folder). ``what`` names the path in the
    message (``"-o"``, ``"--save-tensor"``).
    """
    p = Path(path)
    listing = ", ".join(suffixes) if suffixes is not None else ""
    if p.is_dir():
        raise OutputPathError(
            f"{what} {p} is a folder; expected a file name" + (f" ending in one of {listing}" if listing else "")
        )
    if suffixes is not None and p.suffix.lower() not in suffixes:
        found = f"the extension {p.suffix!r}" if p.suffix else "no extension"
        raise OutputPathError(f"{what} {p} has {found}; supported: {listing}")
    if p.is_file() and not os.access(p, os.W_OK):
        raise OutputPathError(f"{what} {p} is read-only; make it writable to replace it, or write elsewhere")
    _check_writable(p.parent, what, p)
    return p


def check_output_folder(path: str | Path, what: str = "output folder") -> Path:
    """``path`` as a Path when it is a folder that can be written, or one that can be made; otherwise
    :class:`OutputPathError` (it is a file, a file is on the way, or no permission)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{what} {p} is a file; expected a folder (an existing one or a new one)")
    _check_writable(p, what, p)
    return p


def _check_writable(folder: Path, what: str, target: Path) -> None:
    """Raise unless ``folder`` can be written in, or made: its nearest existing ancestor must be a folder
    this process may write in (``os.access`` also knows a read-only file system)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{what} {target} cannot be written: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {target} cannot be written: no permission to write in {existing}")


__all__ = ["check_number", "check_output_file", "check_output_folder"]
