"""Torch work outside the decode engine runs on a short-lived thread, so that its OpenMP pool ends
with it.

libgomp (torch's OpenMP runtime) keeps a pool of worker threads for each thread that runs a
parallel op, for as long as that thread lives. Once it manages more threads than there are cores,
its workers stop spinning between parallel ops and sleep at once, so every op waits tens of
microseconds for a worker to wake. Here, once the thread that had loaded the model kept a pool of
its own, a decode step's small ops on the engine's thread ran 5-10x slower (an add on a [256, 576]
tensor: 66 us against 7-16 us). Loading the model, packing its weights and building the kernel
therefore run on a thread of their own that ends when they are done.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


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
