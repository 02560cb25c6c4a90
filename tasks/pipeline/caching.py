"""The cache policy of every technique task: resume across runs, not only within one.

Prefect's DEFAULT policy includes the run id, so a rerun after a crash would recompute everything;
its TASK_SOURCE hashes only the decorated function, not the parser it calls nor the prompt file.
The key here is the batch's inputs (rows, technique parameters, model and backend ids, generation
parameters; never the batch's position), the text of the prompt templates it renders (an
override's text where `--prompts` gave one, so a changed override recomputes only the stages that
render it), and the source of the technique's module and of the shared filters.

subtle: the code part is read when the task is decorated, in the process that imports the technique,
and travels inside the policy. A Dask worker that unpickles a task need not have imported its module
(`sys.modules` lacks it there), and a key that cannot be computed turns caching off for that batch.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from prefect.cache_policies import CacheKeyFnPolicy, CachePolicy
from pydantic import BaseModel

from tasks.quality import filters
from tasks.templates import prompts

# Inputs that name where a batch sits in a run, not what it computes; and the prompt overrides,
# keyed through the text of the templates the batch renders, not as a whole.
NOT_KEYED = frozenset({"batch_index", "prompt_overrides"})


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def batch_key(inputs: dict[str, Any], templates: list[str], code: list[str]) -> str:
    overrides = inputs.get("prompt_overrides") or {}
    payload = {
        "inputs": {k: _plain(v) for k, v in sorted(inputs.items()) if k not in NOT_KEYED},
        "templates": {name: prompts.source(name, overrides) for name in sorted(set(templates))},
        "code": code,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _defaults(fn: Callable) -> dict[str, Any]:
    parameters = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def batch_cache_policy(
    fn: Callable, templates: Callable[[dict[str, Any]], list[str]], uses: Sequence[ModuleType] = ()
) -> CachePolicy:
    """A policy keyed on a batch's content for the task function `fn`; `templates(inputs)` names
    the prompt templates it uses (file names or inline texts), `uses` the other technique modules
    whose code it runs. The key does not depend on the task-run context, so `key_for` can compute
    it outside a task run (to record a rescued batch, `tasks/pipeline/batching.py`)."""
    module = inspect.getmodule(fn)
    code = [hashlib.sha256(inspect.getsource(m).encode()).hexdigest() for m in (module, *uses, filters)]
    defaults = _defaults(fn)

    def key(context: Any, inputs: dict[str, Any]) -> str:
        # Defaults in, so a key is the same whether or not a caller passed them explicitly.
        inputs = {**defaults, **inputs}
        return batch_key(inputs, templates(inputs), code)

    return CacheKeyFnPolicy(cache_key_fn=key)


def key_for(task: Any, inputs: dict[str, Any]) -> str:
    """The cache key Prefect computes for a run of technique task `task` with `inputs`."""
    return task.cache_policy.cache_key_fn(None, inputs)


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what a retry can fix: not configuration or programming errors."""
    error = state.result(raise_on_failure=False)
    return not isinstance(error, (ValueError, TypeError, KeyError, AttributeError, ImportError))


def with_prompt_overrides(fn: Callable) -> Callable:
    """`fn` rendering its prompts with the overrides it is given as `prompt_overrides` (in whatever
    process runs it), so technique code calls `prompts.render` as if there were none."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        given = signature.bind(*args, **kwargs).arguments.get("prompt_overrides")
        with prompts.overriding(given):
            return fn(*args, **kwargs)

    run.__prefect_task_source__ = fn  # Prefect's task key and source: the technique's, not this wrapper's
    return run


def technique_task(
    name: str,
    templates: Callable[[dict[str, Any]], list[str]],
    uses: Sequence[ModuleType] = (),
    run_name: str | Callable[[], str] | None = None,
):
    """The decorator every technique task shares: one task run per batch, cached across runs on
    the batch's content, persisted, retried on transient backend errors (which must raise).
    `run_name` names each run: a format string over its parameters or a function (Prefect's
    `task_run_name`; default `name[batch_index]`). A task that takes `prompt_overrides` renders
    with them (see `with_prompt_overrides`). Each result carries its model calls' token usage
    (tasks/pipeline/usage.py), so a cached batch still reports what it cost."""
    from prefect import task

    from tasks.pipeline.usage import counted

    def decorate(fn: Callable) -> Any:
        run = counted(name, with_prompt_overrides(fn))
        run.__prefect_task_source__ = fn  # Prefect's task key and source: the technique's
        return task(
            run,
            name=name,
            task_run_name=run_name or name + "[{batch_index}]",
            cache_policy=batch_cache_policy(fn, templates, uses),
            persist_result=True,
            retries=2,
            retry_delay_seconds=[1, 3],
            retry_condition_fn=transient,
        )

    return decorate
