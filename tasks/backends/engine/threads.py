"""Threads and thread counts for torch work on CPU.

`ThreadCounts`: how many threads each decode step and prefill runs on, measured.

`on_own_thread`: torch work outside the decode engine runs on a short-lived thread, so that its
OpenMP pool ends with it.

libgomp (torch's OpenMP runtime) keeps a pool of worker threads for each thread that runs a
parallel op, for as long as that thread lives. Once it manages more threads than there are cores,
its workers stop spinning between parallel ops and sleep at once, so every op waits tens of
microseconds for a worker to wake. Here, once the thread that had loaded the model kept a pool of
its own, a decode step's small ops on the engine's thread ran several times slower
(docs/engine.md, "OpenMP's thread pools"). Loading the model, packing its weights and building the
kernel therefore run on a thread of their own that ends when they are done.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")

_RECHECK_S = 20.0  # how often a count is measured again (other processes come and go)
# A measurement that would change a count is taken again this much later, and the count changes
# only if both agree: in a flow, a task run ending (its results written, the next one started)
# kept both cores busy for a moment, a re-measurement then chose 1 thread, and prefill and the
# fullest decode steps ran on one thread until the next re-measurement.
_CONFIRM_S = 1.0
_MEASURED_ROWS = 256  # counts are measured at up to this many rows (more: as many)
# torch's thread count before any engine changed it (an engine sets the process-wide count)
_THREADS = torch.get_num_threads()


class ThreadCounts:
    """Runs each step on as many threads as make a product of its rows fastest right now. One
    thread can win on few rows and on cores shared with other processes, where every parallel op waits
    for its slowest thread; a full batch or a prefill runs faster on all cores when the machine is
    quiet (docs/engine.md, "Right-sized threads"). So the choice is measured per power-of-two number
    of rows (a 2-row step must not leave the next 8,000-position prefill on one thread), and again
    every `_RECHECK_S` seconds; a changed choice must be measured twice, `_CONFIRM_S` apart, to take
    effect. `INSTRUCTFORGE_THREADS` fixes the count instead."""

    def __init__(self, probe: Callable[[torch.Tensor], object], width: int, device: torch.device) -> None:
        self.probe, self.width, self.device = probe, width, device  # probe(x): x is [rows, width]
        self.most = _THREADS
        self.fixed = os.environ.get("INSTRUCTFORGE_THREADS")
        # rows bucket -> [threads in use, when to measure next, a differing count awaiting confirmation]
        self.measured: dict[int, list] = {}

    def use(self, rows: int) -> None:
        """Set torch's thread count for a step of `rows` rows (a prefill: its positions)."""
        if self.fixed or self.device.type != "cpu" or self.most == 1:
            torch.set_num_threads(int(self.fixed or self.most))
            return
        bucket = min(1 << max(rows - 1, 0).bit_length(), _MEASURED_ROWS)
        entry, now = self.measured.get(bucket), time.monotonic()
        if entry is None:
            entry = self.measured[bucket] = [self.fastest(bucket), now + _RECHECK_S, None]
        elif now >= entry[1]:
            found = self.fastest(bucket)
            if found == entry[0] or found == entry[2]:  # unchanged, or confirmed
                entry[:] = [found, now + _RECHECK_S, None]
            else:  # a change, perhaps a moment's load: keep the count until it is measured again
                entry[1:] = [now + _CONFIRM_S, found]
        if torch.get_num_threads() != entry[0]:
            torch.set_num_threads(entry[0])

    def fastest(self, rows: int) -> int:
        """The thread count that runs the probe on `rows` rows fastest: the best of several runs
        each, taken in alternating rounds so that a moment's load falls on both counts."""
        x = torch.randn(rows, self.width)
        best = {1: float("inf"), self.most: float("inf")}
        for _ in range(3):
            for threads in best:
                torch.set_num_threads(threads)
                self.probe(x)  # the first run after a change of count wakes or parks the workers
                for _ in range(3):
                    start = time.perf_counter()
                    self.probe(x)
                    best[threads] = min(best[threads], time.perf_counter() - start)
        return min(best, key=best.get)


def on_own_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """`fn(*args, **kwargs)` on a new thread that ends when it returns (context variables, such as
    Prefect's run context, carried over); its result or its exception, as if called here."""
    context = contextvars.copy_context()
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = context.run(fn, *args, **kwargs)
        except BaseException as err:  # re-raised on the calling thread
            outcome["error"] = err

    thread = threading.Thread(target=run, name="torch-setup")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
