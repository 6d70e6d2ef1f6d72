"""The worker processes that train and score benchmark runs side by side."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """Processes for benchmark runs: spawned (forking a process whose torch thread pools already ran
    can deadlock) and stopping when this process dies, so a killed benchmark leaves no orphans training on."""
    return ProcessPoolExecutor(
        jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_exit_with_parent, initargs=(os.getpid(),)
    )


def _exit_with_parent(parent: int) -> None:
    """Worker initialiser: stop when the benchmark process is gone (killed), instead of training on as an orphan."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
