"""Run a technique task over a list of rows, one Prefect task run per batch.

A batch is the unit of caching and of resume: a crash costs at most the batches in flight. A batch
that still fails after its retries is split into single rows so that one bad row cannot sink its
neighbours (fault isolation); rows that fail alone become failure records, the run completes, and
because a failure is never cached the next run tries them again. The rescued batch's outcome is
stored under the batch's own cache key, so the next run calls the model only for the rows that
failed alone, not for the whole batch again. Each stage shows its progress
in rows with the time left (`tasks/pipeline/progress.py`): a bar on a terminal, a log line per finished
batch otherwise, and a progress artifact in the UI.

Rows in flight: a continuous-batching engine (the local `transformers` backend) gives a slot whose
row ended to the next queued prompt at once, but a task run holds its thread until its batch's
longest answer ends. With only as many rows in flight as the engine has slots (8 task runs of 32
for 256 slots), nothing waits in the engine's queue and each freed slot stays empty until its
whole batch is done: most answers are short, and nearly every batch of 32 holds one that runs to
the token limit. So a stage on threads keeps `IN_FLIGHT_PER_SLOT` times the engine's slots in
flight (a wider thread pool for that stage only); batches, their cache keys and every output stay
as they were. Dask runs keep their own limits.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from prefect import Task, unmapped
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture, as_completed, wait
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from tasks.pipeline import usage
from tasks.pipeline.progress import stage_progress

Row = dict[str, Any]
# Rows kept in flight per engine slot: a slot's worth generating, the rest queued to refill freed
# slots. Twice the slots is not enough: a batch whose other rows ended still holds its thread (and
# its share of the rows in flight) while its one long answer runs to the token limit.
IN_FLIGHT_PER_SLOT = 3


def chunk(rows: Sequence[Row], size: int) -> list[list[Row]]:
    return [list(rows[i : i + size]) for i in range(0, len(rows), size)]


def _engine_slots(params: dict) -> int:
    """The decode slots of the stage's backend when it batches continuously (else 0)."""
    backend, model = params.get("backend"), params.get("model")
    if not (isinstance(backend, str) and isinstance(model, str)):
        return 0
    from tasks.backends import get_backend

    engine = getattr(get_backend(backend, model), "engine", None)  # loaded already by the flow
    return getattr(engine, "max_slots", 0) or 0


@contextmanager
def _runner(batch_size: int, params: dict) -> Iterator[TaskRunner]:
    """The flow's task runner, or, for a thread pool too small to keep the engine's queue fed, a
    wider thread pool for this stage (closed when the stage's futures have all ended)."""
    context = FlowRunContext.get()
    runner = getattr(context, "task_runner", None)
    if runner is None:
        raise RuntimeError("map_batches runs technique tasks inside a flow (call it from a @flow).")
    # subtle: an exact type check; a subclass or Dask's runner sets its own concurrency (and a Dask
    # run's model lives in its workers, not here).
    threads = type(runner) is ThreadPoolTaskRunner
    wanted = math.ceil(IN_FLIGHT_PER_SLOT * _engine_slots(params) / batch_size) if threads else 0
    if wanted <= getattr(runner, "_max_workers", wanted):
        yield runner
        return
    with ThreadPoolTaskRunner(max_workers=wanted) as wider:
        yield wider


def _submit(
    runner: TaskRunner,
    task: Task,
    batches: list[list[Row]],
    names: list[str],
    params: dict,
    tokens: usage.StageTokens,
) -> list[PrefectFuture]:
    rows = next(iter(inspect.signature(task.fn).parameters))
    mapped = {rows: batches, "batch_index": names, **{k: unmapped(v) for k, v in params.items()}}
    futures = list(runner.map(task, mapped))  # what `task.map` does, on the chosen runner
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
    runner: TaskRunner,
    task: Task,
    batch: list[Row],
    index: int,
    params: dict,
    parts: list,
    tokens: usage.StageTokens,
) -> list:
    """Run alone each row of `batch` whose part is None; its part becomes its result, or its
    failure record if it fails alone."""
    todo = [j for j, part in enumerate(parts) if part is None]
    names = [f"{index}.{j}" for j in todo]
    singles = _submit(runner, task, [[batch[j]] for j in todo], names, params, tokens)
    for j, single in zip(todo, singles):
        if (error := _error(single)) is None:
            parts[j] = single.result()
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
    with _runner(batch_size, params) as runner:
        futures = _submit(runner, task, batches, [str(i) for i in range(len(batches))], params, tokens)
        _gather(runner, task, batches, futures, params, tokens, out)
    return out


def _gather(
    runner: TaskRunner,
    task: Task,
    batches: list[list[Row]],
    futures: list[PrefectFuture],
    params: dict,
    tokens: usage.StageTokens,
    out: dict,
) -> None:
    """Add each batch's rows and drops to `out` in input order; rescue the batches that failed."""
    for index, (batch, future) in enumerate(zip(batches, futures)):
        result = future.result() if _error(future) is None else None
        if result is not None and "parts" not in result:
            out["rows"] += result["rows"]
            out["drops"] += result["drops"]
            continue
        # Isolate: each row alone (with its own retries), so one bad row cannot sink the batch; a
        # batch rescued before holds the rows that already succeeded alone.
        parts = result["parts"] if result else [None] * len(batch)
        parts = _rescue(runner, task, batch, index, params, parts, tokens)
        _remember(task, batch, index, params, parts)
        for part in parts:
            if "rows" in part:
                out["rows"] += part["rows"]
                out["drops"] += part["drops"]
            else:
                out["failures"].append(part)


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
