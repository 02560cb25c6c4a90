"""`on_own_thread` runs work on a thread that ends (so its OpenMP pool ends with it) and behaves like
a direct call: same result, same exception, the caller's context variables."""

import contextvars
import threading

import pytest

from tasks.backends.engine.threads import on_own_thread

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


@pytest.fixture
def counts(monkeypatch):
    """A ThreadCounts choosing between 1 and 2 threads on a fake clock, with scripted measurements."""
    import torch

    from tasks.backends.engine import threads

    before = torch.get_num_threads()
    clock = [0.0]
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    monkeypatch.delenv("INSTRUCTFORGE_THREADS", raising=False)
    counts = threads.ThreadCounts(lambda x: None, 8, torch.device("cpu"))
    counts.most = 2
    script: list[int] = []
    monkeypatch.setattr(counts, "fastest", lambda rows: script.pop(0))

    def step(rows: int, at: float) -> int:
        clock[0] = at
        counts.use(rows)
        return torch.get_num_threads()

    yield script, step
    torch.set_num_threads(before)


def test_a_changed_thread_count_takes_effect_only_when_measured_twice(counts):
    """A moment's load (a Prefect task run ending) once made a re-measurement choose 1 thread, and
    the fullest steps then ran on one thread for 20 s: one differing measurement must not do that."""
    from tasks.backends.engine.threads import _CONFIRM_S, _RECHECK_S

    script, step = counts
    script += [2, 1, 2]
    assert step(256, 0.0) == 2  # measured: 2
    assert step(256, _RECHECK_S + 1) == 2  # measured 1 once: kept at 2 for now
    assert step(256, _RECHECK_S + 1.5) == 2  # not measured again before _CONFIRM_S
    assert step(256, _RECHECK_S + 2 + _CONFIRM_S) == 2 and not script  # measured 2: the 1 was a blip
    script += [1, 1]
    later = 3 * _RECHECK_S
    assert step(256, later) == 2
    assert step(256, later + _CONFIRM_S) == 1  # measured 1 twice: sustained load, 1 thread
    assert step(256, later + 2 * _CONFIRM_S) == 1 and not script  # next check is _RECHECK_S later


def test_a_size_measured_for_the_first_time_takes_its_measurement_at_once(counts):
    script, step = counts
    script += [1, 2]
    assert step(1, 0.0) == 1
    assert step(4096, 0.5) == 2 and not script  # a prefill: its own bucket, measured now
    assert step(1, 1.0) == 1  # no new measurement: the script is empty
