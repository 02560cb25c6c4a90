"""Token accounting: what each stage of a run cost in prompt and completion tokens, and how fast.

Counted at the model seam: `get_backend` hands out backends whose `generate` adds each call's
token counts (the server's `usage`, the local engine's, the fake's words) and its start and end
times to the meter of the task run that called it. A technique task returns its meter with its
result (`result["usage"]`), so a batch served from Prefect's cache still reports what it cost
when it was computed, and the summary says how many batches came from cache. A stage's speed is
its completion tokens over the time some batch of it was generating (the union of the calls'
intervals), so batches that run at once are not counted twice.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

Usage = dict[str, dict[str, Any]]  # stage -> counts, `intervals` and batch counts

_meter: ContextVar[Usage | None] = ContextVar("usage_meter", default=None)
_stage: ContextVar[str] = ContextVar("usage_stage", default="model")
COUNTS = ("prompt_tokens", "completion_tokens", "generations", "calls")


def metered(backend: Any) -> Any:
    """`backend` with its `generate` counted into the calling task run's meter."""
    inner = backend.generate

    def generate(prompts: list, params: Any) -> list:
        start = time.time()
        out = inner(prompts, params)
        if (meter := _meter.get()) is not None:
            entry = meter.setdefault(_stage.get(), _empty())
            entry["prompt_tokens"] += sum(g.prompt_tokens for g in out)
            entry["completion_tokens"] += sum(g.completion_tokens for g in out)
            entry["generations"] += len(out)
            entry["calls"] += 1
            entry["intervals"].append([start, time.time()])
        return out

    backend.generate = generate
    return backend


def _empty() -> dict[str, Any]:
    return {**dict.fromkeys(COUNTS, 0), "intervals": [], "batches": 0, "cached_batches": 0}


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Count the model calls inside under `name` (a task with two stages, e.g. Magpie's replies)."""
    token = _stage.set(name)
    try:
        yield
    finally:
        _stage.reset(token)


def counted(name: str, fn: Callable[..., dict]) -> Callable[..., dict]:
    """`fn`, a technique task's body, with its model calls' usage added to its result dict."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> dict:
        # subtle: Dask pickles this wrapper by value; what it uses is imported here, by name,
        # since a module-level ContextVar cannot be pickled.
        from tasks.pipeline.usage import run_counted

        return run_counted(name, fn, args, kwargs)

    run.__prefect_task_source__ = fn  # Prefect keys and names the task by `fn`'s code, not this wrapper
    return run


def run_counted(name: str, fn: Callable[..., dict], args: tuple, kwargs: dict) -> dict:
    """`fn(*args, **kwargs)` with a fresh meter; its usage added to the result dict."""
    if _meter.get() is not None:  # called by another task's body: that task's stage counts
        return fn(*args, **kwargs)
    meter: Usage = {}
    token = _meter.set(meter)
    try:
        with stage(name):
            result = fn(*args, **kwargs)
    finally:
        _meter.reset(token)
    return {**result, "usage": meter} if isinstance(result, dict) else result


def add(total: Usage, usage: Usage | None, cached: bool = False) -> Usage:
    """`total` with one batch's (or one map's) usage added; a batch counts once per stage."""
    for name, entry in (usage or {}).items():
        into = total.setdefault(name, _empty())
        for key in COUNTS:
            into[key] += entry.get(key, 0)
        into["intervals"] = _union(into["intervals"] + entry.get("intervals", []))
        if "batches" in entry and entry["batches"]:  # an already gathered map
            into["batches"] += entry["batches"]
            into["cached_batches"] += entry["cached_batches"]
        else:
            into["batches"] += 1
            into["cached_batches"] += int(cached)
    return total


def _union(intervals: list[list[float]]) -> list[list[float]]:
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def summary(usage: Usage) -> dict[str, dict[str, Any]]:
    """Per stage: tokens, generating seconds, tokens per second and batches from cache."""
    out = {}
    for name, entry in usage.items():
        seconds = sum(end - start for start, end in entry["intervals"])
        speed = round(entry["completion_tokens"] / seconds, 1) if seconds else None
        out[name] = {
            "prompt_tokens": entry["prompt_tokens"],
            "completion_tokens": entry["completion_tokens"],
            "total_tokens": entry["prompt_tokens"] + entry["completion_tokens"],
            "generations": entry["generations"],
            "seconds": round(seconds, 4),
            "completion_tokens_per_second": speed,
            "batches": entry["batches"],
            "cached_batches": entry["cached_batches"],
        }
    return out


def describe(entry: dict[str, Any]) -> str:
    """One line for a progress description: tokens so far and speed."""
    speed = entry.get("completion_tokens_per_second")
    rate = f", {speed:,.1f} tokens/s" if speed else ""
    return f"{entry['prompt_tokens']:,} prompt + {entry['completion_tokens']:,} completion tokens{rate}"


def _speed(entry: dict[str, Any]) -> str:
    speed = entry.get("completion_tokens_per_second")
    return f"{speed:,.1f}" if speed else "-"


def console(stages: dict[str, dict[str, Any]]) -> str:
    """The token lines of the console summary ('' when no model was called)."""
    lines = [f"  {name:<16} {describe(e)}" for name, e in stages.items()]
    cached = sum(e["cached_batches"] for e in stages.values())
    note = f" ({cached} batches from cache: counted when computed)" if cached else ""
    return "\n".join([f"Tokens, by stage{note}:", *lines]) if lines else ""


def markdown(stages: dict[str, dict[str, Any]]) -> str:
    """The token table of a run's report and dataset card ('' when no model was called)."""
    if not stages:
        return ""
    lines = [
        f"| {name} | {e['prompt_tokens']:,} | {e['completion_tokens']:,} | "
        f"{_speed(e)} | {e['cached_batches']}/{e['batches']} |"
        for name, e in stages.items()
    ]
    cached = sum(e["cached_batches"] for e in stages.values())
    note = (
        f"\n\n{cached} batches came from cache: their counts and speed are those of the run that "
        "computed them (no tokens were spent on them now)."
        if cached
        else ""
    )
    return (
        "## Tokens\n\n| stage | prompt tokens | completion tokens | completion tokens/s | "
        "batches from cache |\n|---|---|---|---|---|\n" + "\n".join(lines) + note
    )


class StageTokens:
    """A stage's usage gathered as its batches finish, shown live in a Prefect progress artifact
    (batches done, tokens so far, speed) when the stage runs inside a flow."""

    def __init__(self, stage_name: str, total: int) -> None:
        self.stage, self.total, self.done = stage_name, max(total, 1), 0
        self.usage: Usage = {}
        self.artifact = _progress_artifact(stage_name)

    def add(self, future: Any) -> None:
        """Count a finished batch's usage (a failed one spent tokens no result reports)."""
        future.wait()  # done already; this settles its final state (else read, maybe stale, from the API)
        state = future.state
        if state.is_completed():
            result = future.result()
            add(self.usage, result.get("usage") if isinstance(result, dict) else None, state.name == "Cached")
        self.done += 1
        if self.artifact is not None:
            from prefect.artifacts import update_progress_artifact

            stages = summary(self.usage)
            text = "; ".join(f"{name}: {describe(e)}" for name, e in stages.items()) or "no model calls yet"
            progress = min(100.0, 100.0 * self.done / self.total)
            update_progress_artifact(self.artifact, progress, description=f"{self.stage}: {text}")


def _progress_artifact(stage_name: str) -> Any:
    from prefect.artifacts import create_progress_artifact
    from prefect.context import FlowRunContext
    from prefect.runtime import flow_run

    if FlowRunContext.get() is None:
        return None
    key = f"{flow_run.flow_name}-{stage_name}-tokens".replace("_", "-").lower()
    return create_progress_artifact(0.0, key=key, description=f"{stage_name}: starting")
