"""Run a technique task over a list of rows, one Prefect task run per batch.

A batch is the unit of caching and of resume: a crash costs at most the batches in flight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import Task, unmapped

Row = dict[str, Any]


def chunk(rows: Sequence[Row], size: int) -> list[list[Row]]:
    return [list(rows[i : i + size]) for i in range(0, len(rows), size)]


def map_batches(task: Task, rows: Sequence[Row], batch_size: int, **params: Any) -> dict:
    """Submit `task(batch, batch_index=i, **params)` for every batch and gather, in order, the
    rows and the drop records the batches return. A batch that still fails after its retries
    raises here, so the flow fails instead of reporting success with rows missing."""
    batches = chunk(rows, batch_size)
    if not batches:
        return {"rows": [], "drops": []}
    futures = task.map(
        batches, batch_index=range(len(batches)), **{k: unmapped(v) for k, v in params.items()}
    )
    results = [future.result() for future in futures]
    return {
        "rows": [row for result in results for row in result["rows"]],
        "drops": [drop for result in results for drop in result["drops"]],
    }
