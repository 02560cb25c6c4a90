"""Run a technique task over a list of rows, one Prefect task run per batch.

A batch is the unit of caching and of resume: a crash costs at most the batches in flight. A batch
that still fails after its retries is split into single rows so that one bad row cannot sink its
neighbours (fault isolation); rows that fail alone become failure records, the run completes, and
because a failure is never cached the next run tries them again. The rescued batch's outcome is
stored under the batch's own cache key, so the next run calls the model only for the rows that
failed alone, not for the whole batch again. Each stage shows its progress
in rows with the time left (`tasks/pipeline/progress.py`): a bar on a terminal, a log line per finished
batch otherwise, and a progress artifact in the UI.

Each batch waits on the task runs that wrote its rows (`wait_for`, by row id): the results pass
through the flow as plain values, so this is what gives Prefect the edges of the run graph (each
EvolInstruct batch hangs from the SelfInstruct batches it rewrites, each response batch from those,
the save from the responses). Those runs are finished by then, so nothing waits, and `wait_for` is no
task input: the cache key is unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from prefect import Task
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture, as_completed, wait

from tasks.pipeline import usage
from tasks.pipeline.progress import stage_progress

Row = dict[str, Any]


def chunk(rows: Sequence[Row], size: int) -> list[list[Row]]:
    return [list(rows[i : i + size]) for i in range(0, len(rows), size)]


# The task run (future) that wrote each row of the current flow run, by row id: (run id, writers).
_writers: ContextVar[tuple[Any, dict[str, PrefectFuture]] | None] = ContextVar("writers", default=None)


def _writers_of_run() -> dict[str, PrefectFuture]:
    context = FlowRunContext.get()
    run = context.flow_run.id if context and context.flow_run else None
    current = _writers.get()
    if current is None or current[0] != run:  # a new flow run starts a new record
        current = (run, {})
        _writers.set(current)
    return current[1]


def _record(rows: Sequence[Row], future: PrefectFuture) -> None:
    writers = _writers_of_run()
    for row in rows:
        if "id" in row:
            writers[row["id"]] = future


def upstream(rows: Sequence[Row]) -> list[PrefectFuture]:
    """The task runs that wrote `rows` in this flow run, each once: what a task over them waits on."""
    writers = _writers_of_run()
    found = {id(f): f for row in rows if (f := writers.get(row.get("id"))) is not None}
    return list(found.values())


def run_batch(task: Task, rows: list[Row], batch_index: int, **params: Any) -> dict:
    """One run of `task(rows, batch_index=..., **params)` after the task runs that wrote `rows`; its
    result, whose rows are then recorded as written by it. Raises what the task raised."""
    future = task.submit(rows, batch_index=batch_index, **params, wait_for=upstream(rows))
    result = future.result()
    _record(result["rows"], future)
    return result


def _submit(
    task: Task, batches: list[list[Row]], names: list[str], params: dict, tokens: usage.StageTokens
) -> list[PrefectFuture]:
    futures = [
        task.submit(batch, batch_index=name, **params, wait_for=upstream(batch))
        for batch, name in zip(batches, names)
    ]
    # Every batch ends before any result is read, so no finished work is thrown away. Progress
    # counts rows, so one batch of many rows is not shown as 0/1 then 1/1.
    rows_in = {id(future): len(batch) for future, batch in zip(futures, batches)}
    with stage_progress(task.name, sum(rows_in.values()), "rows") as advance:
        for future in as_completed(futures):
            advance(rows_in[id(future)])
            tokens.add(future)
    wait(futures)
    return futures


def _error(future: PrefectFuture) -> BaseException | None:
    state = future.state
    if state.is_completed():
        return None
    error = state.result(raise_on_failure=False)
    return error if isinstance(error, BaseException) else RuntimeError(str(state.message))


def failure(stage: str, row: Row, error: BaseException) -> dict[str, Any]:
    return {
        "stage": stage,
        "row_id": row.get("id"),
        "seed_id": row.get("seed_id"),
        "error": f"{type(error).__name__}: {error}",
        "raw_output": getattr(error, "raw_output", None),
    }


def _rescue(
    task: Task, batch: list[Row], index: int, params: dict, parts: list, tokens: usage.StageTokens
) -> list:
    """Run alone each row of `batch` whose part is None; its part becomes its result, or its
    failure record if it fails alone."""
    todo = [j for j, part in enumerate(parts) if part is None]
    names = [f"{index}.{j}" for j in todo]
    for j, single in zip(todo, _submit(task, [[batch[j]] for j in todo], names, params, tokens)):
        if (error := _error(single)) is None:
            parts[j] = single.result()
            _record(parts[j]["rows"], single)
        else:
            parts[j] = failure(task.name, batch[j], error)
    return parts


def _remember(task: Task, batch: list[Row], index: int, params: dict, parts: list) -> None:
    """Store a rescued batch's outcome under the batch's own cache key, so the next run reads it
    instead of calling the model for the batch again. A row that failed alone is stored as None
    (a failure is never cached): the next run runs just that row."""
    from prefect.cache_policies import CacheKeyFnPolicy
    from prefect.results import get_result_store

    from tasks.pipeline.caching import key_for

    if not isinstance(task.cache_policy, CacheKeyFnPolicy):  # not a technique task: no key to use
        return
    rows = next(iter(inspect.signature(task.fn).parameters))
    key = key_for(task, {**params, rows: batch, "batch_index": str(index)})
    done = [part if "rows" in part else None for part in parts]
    result = {
        "rows": [r for p in done if p for r in p["rows"]],
        "drops": [d for p in done if p for d in p["drops"]],
        "usage": {},
    }
    for part in done:  # what the rows cost when they ran alone, reported again on a cache hit
        usage.add(result["usage"], part.get("usage") if part else None)
    if None in done:
        result["parts"] = done
    get_result_store().update_for_task(task, _sync=True).write(result, key=key)


def map_batches(task: Task, rows: Sequence[Row], batch_size: int, **params: Any) -> dict:
    """Run `task(batch, batch_index=i, **params)` over every batch; gather, in input order, the
    rows and drop records the batches return, plus a failure record for each row that failed, and
    the stage's token usage (tasks/pipeline/usage.py)."""
    batches = chunk(rows, batch_size)
    out: dict[str, Any] = {"rows": [], "drops": [], "failures": [], "usage": {}}
    if not batches:
        return out
    tokens = usage.StageTokens(task.name, len(batches))
    out["usage"] = tokens.usage
    futures = _submit(task, batches, [str(i) for i in range(len(batches))], params, tokens)
    for index, (batch, future) in enumerate(zip(batches, futures)):
        result = future.result() if _error(future) is None else None
        if result is not None and "parts" not in result:
            _record(result["rows"], future)
            out["rows"] += result["rows"]
            out["drops"] += result["drops"]
            continue
        # Isolate: each row alone (with its own retries), so one bad row cannot sink the batch; a
        # batch rescued before holds the rows that already succeeded alone.
        parts = result["parts"] if result else [None] * len(batch)
        for part in parts:
            if part and "rows" in part:
                _record(part["rows"], future)
        parts = _rescue(task, batch, index, params, parts, tokens)
        _remember(task, batch, index, params, parts)
        for part in parts:
            if "rows" in part:
                out["rows"] += part["rows"]
                out["drops"] += part["drops"]
            else:
                out["failures"].append(part)
    return out


class Ledger:
    """What a run set aside on the way: drop records (bad generations, with reasons), failure
    records (rows whose batch raised even alone), and the row count after each stage."""

    def __init__(self) -> None:
        self.drops: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self.usage: usage.Usage = {}

    def rows(self, result: dict, stage: str | None = None) -> list[Row]:
        """The rows of a `map_batches` result; its drops and failures are recorded here."""
        self.drops += result["drops"]
        self.failures += result.get("failures", [])
        usage.add(self.usage, result.get("usage"))
        if stage:
            self.counts[stage] = self.counts.get(stage, 0) + len(result["rows"])
        return result["rows"]
