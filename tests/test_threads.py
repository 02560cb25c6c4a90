"""`on_own_thread` runs work on a thread that ends (so its OpenMP pool ends with it) and behaves like
a direct call: same result, same exception, the caller's context variables."""

import contextvars
import threading

import pytest

from tasks.backends.threads import on_own_thread

marker = contextvars.ContextVar("marker", default="unset")


def test_result_exception_and_context_come_back():
    marker.set("caller")
    seen = {}

    def work(x, y=1):
        seen["thread"] = threading.current_thread()
        seen["marker"] = marker.get()
        return x + y

    assert on_own_thread(work, 2, y=3) == 5
    assert seen["thread"] is not threading.current_thread() and not seen["thread"].is_alive()
    assert seen["marker"] == "caller"

    def fail():
        raise ValueError("bad model")

    with pytest.raises(ValueError, match="bad model"):
        on_own_thread(fail)
