"""A stage on threads keeps enough batches in flight to feed a continuous-batching engine's queue,
whatever the flow's thread pool, and gives the same rows in the same order."""

import threading
import time
from types import SimpleNamespace

import pytest
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

import tasks.backends
from tasks.pipeline import batching

HOLD_S = 1.0  # long enough that every batch the pool admits overlaps the others


class Peak:
    def __init__(self) -> None:
        self.lock, self.now, self.most = threading.Lock(), 0, 0

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1


peak = Peak()


@task
def hold(rows: list[dict], batch_index: str, model: str, backend: str) -> dict:
    with peak:
        time.sleep(HOLD_S)
    return {"rows": [{**r, "batch": batch_index} for r in rows], "drops": []}


@flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
def stage(rows: list[dict]) -> dict:
    return batching.map_batches(hold, rows, 2, model="m", backend="fake")


@pytest.fixture
def engine_slots(monkeypatch):
    """The stage's backend batches continuously on 8 slots."""
    engine = SimpleNamespace(engine=SimpleNamespace(max_slots=8))
    monkeypatch.setattr(tasks.backends, "get_backend", lambda backend, model: engine)
    monkeypatch.setattr(batching, "IN_FLIGHT_PER_SLOT", 3)


ROWS = [{"id": f"r{i}"} for i in range(24)]  # 12 batches of 2


def test_an_engine_gets_three_times_its_slots_in_flight(prefect_server, engine_slots):
    peak.most = 0
    out = stage(ROWS)
    assert peak.most == 3 * 8 // 2  # 24 rows in flight: 12 batches of 2, not the flow's 2
    assert [r["id"] for r in out["rows"]] == [r["id"] for r in ROWS]
    assert [r["batch"] for r in out["rows"]] == [str(i // 2) for i in range(24)]


def test_a_backend_without_an_engine_keeps_the_flows_pool(prefect_server):
    peak.most = 0
    out = stage(ROWS[:8])  # the fake backend: no engine
    assert peak.most == 2
    assert [r["id"] for r in out["rows"]] == [r["id"] for r in ROWS[:8]]
