"""Prefect's own cost on a response run: a flow over N instruction rows in batches of 32, through the
real technique task (cache keys, persisted results, task runs), on a backend that does no work.
Its wall time minus the time spent inside the backend is what Prefect adds."""

import time
from pathlib import Path

from prefect import flow
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.backends import GenerationParams, get_backend
from tasks.pipeline.batching import map_batches
from tasks.respond import generate_responses


@flow(name="bench-respond", task_runner=ThreadPoolTaskRunner(max_workers=4))
def respond_rows(rows: list[dict], batch_size: int = 32) -> int:
    params = GenerationParams(max_new_tokens=256, temperature=0.0)
    out = map_batches(generate_responses, rows, batch_size, params=params, model="fake", backend="fake")
    return len(out["rows"]) + len(out["drops"])


def prefect_overhead(n_rows: int, storage: Path) -> float:
    """Seconds Prefect adds to a flow that answers `n_rows` rows (fresh result store: no cache hits)."""
    backend = get_backend("fake", "fake")
    inside = [0.0]
    generate = backend.generate

    def timed(prompts, params):
        start = time.perf_counter()
        try:
            return generate(prompts, params)
        finally:
            inside[0] += time.perf_counter() - start

    backend.generate = timed
    rows = [
        {"id": f"r{i}", "seed_id": "bench", "instruction": f"Question number {i}?"} for i in range(n_rows)
    ]
    try:
        with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}):
            warm = [{**row, "id": "warm-" + row["id"]} for row in rows[:32]]
            respond_rows(warm)  # starts the temporary server: not part of a run's cost
            inside[0] = 0.0
            start = time.perf_counter()
            assert respond_rows(rows) == n_rows
            return time.perf_counter() - start - inside[0]
    finally:
        backend.generate = generate
