"""One training run per output folder: a lock while it runs, and no mixing with an earlier run.

* :class:`RunLock` — an exclusive ``flock`` on ``<out>/train.lock``, taken before the run writes
  anything and held until it ends. The kernel drops a lock when its holder dies (even by SIGKILL),
  so a lock left by a dead process is never in the way; the file names the holder (PID, host,
  start time) for the refusal message. Under DDP only rank 0 takes it (the other ranks are the
  same run).
* :func:`prepare_run_folder` — a fresh run refuses a folder that holds an earlier run (a
  checkpoint or an export) unless told to overwrite it, and then removes that run's outputs, so
  that logs, checkpoints and exports of two runs never mix. Any run, fresh or resumed, first
  deletes the temporary files of writes that were killed half-way (as large as a checkpoint).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from flow_omni.checkpoint import remove_partial_writes
from flow_omni.errors import OutputFolderError

LOCK_NAME = "train.lock"


def launch_rank() -> int:
    """This process's global rank as the launcher set it (torchrun: ``RANK``, SLURM: ``SLURM_PROCID``),
    known before Lightning starts."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


class RunLock:
    """``with RunLock(out):`` — hold ``out``'s run lock, or raise :class:`OutputFolderError` naming its holder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise OutputFolderError(
                f"{self.folder} is in use by another training run ({holder}); "
                "wait for it to end, or train into another folder"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        # Emptied, not deleted: deleting a lock file lets a process that opened it just before lock
        # an inode nobody else will ever look at.
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def prepare_run_folder(
    out: str | Path,
    *,
    fresh: bool,
    overwrite: bool,
    outputs: Sequence[str],
    marks: Sequence[str],
) -> list[str]:
    """Make ``out`` ready for a run (hold its :class:`RunLock` first); return what was done, one note each.

    Args:
        fresh: the run starts at step 0 (no checkpoint to resume from).
        overwrite: a fresh run may replace an earlier run's outputs.
        outputs: every file and folder a run writes in ``out`` (what a fresh run clears).
        marks: globs (relative to ``out``) whose presence means ``out`` holds an earlier run:
            something resumable or a result, not just the log of a run killed before its first
            checkpoint (which a deterministic run repeats exactly).

    Raises:
        OutputFolderError: ``fresh`` and ``out`` holds an earlier run, without ``overwrite``.
    """
    out = Path(out)
    notes = []
    if fresh:
        found = sorted({str(p.relative_to(out)) for m in marks for p in out.glob(m)})
        if found and not overwrite:
            raise OutputFolderError(
                f"{out} already holds a training run ({', '.join(found)}); continue it with --resume, "
                "start it over with --overwrite (deletes it), or train into another folder"
            )
        cleared = [name for name in outputs if (out / name).exists()]
        for name in cleared:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        if cleared:
            notes.append(f"removed the outputs of an earlier run in {out}: {', '.join(cleared)}")
    partial = [p for folder in (out, *(out / name for name in outputs)) for p in remove_partial_writes(folder)]
    if partial:
        names = ", ".join(str(p.relative_to(out)) for p in partial)
        notes.append(f"removed {len(partial)} partial file(s) of writes that were killed: {names}")
    return notes


__all__ = ["LOCK_NAME", "RunLock", "launch_rank", "prepare_run_folder"]
