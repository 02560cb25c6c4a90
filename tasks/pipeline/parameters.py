"""The parameters every flow shares, grouped: the model that writes (`llm`), how it samples
(`sampling`), how the work is cut (`batching`) and where the data goes (`output`).

A group is one pydantic model, so Prefect validates it and draws it as one section of the run form,
and a flow's body reads `sampling.temperature` instead of threading twenty arguments. Users still
name each field flat: the CLI's flags (`--temperature`), a recipe's parameters and a Python call
(`instruct(temperature=0.5)`) give fields by name and `nest` puts them in their group, filling the
rest from the flow's own defaults (`magpie` samples at 1.0, the others at 0.7). `flat` is the way
back: the run's parameters as the card and the recipe record them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, TypeVar

from prefect import Flow

# Re-exported: flows take Prefect's run logger from here, so that their first import is of `tasks`
# (whose defaults include DO_NOT_TRACK) and Prefect's first import shows no telemetry notice.
from prefect import get_run_logger as get_run_logger
from prefect.context import FlowRunContext
from pydantic import BaseModel, ConfigDict, Field

from tasks.backends import BackendId, GenerationParams
from tasks.backends.embedded import EMBEDDED_MODEL

Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]
Temperature = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Model(Group):
    """The model that writes, and the prompts it is given."""

    model: str = Field(
        EMBEDDED_MODEL,
        description="Model id: the embedded default, a local model directory, or a Hub id; with the "
        "openai backend, the served model name or `http://host:port/v1#name`.",
    )
    backend: BackendId = Field(
        "transformers",
        description="`transformers` runs the model locally; `openai` calls an OpenAI-compatible server "
        "(vLLM, TGI, llama.cpp, Ollama); `fake` is a deterministic stand-in.",
    )
    prompts: Path | None = Field(
        None,
        description="A directory of .jinja templates that replace the shipped ones of the same name "
        "(e.g. respond.jinja; see prompts/README.md): try a prompt without editing prompts/.",
    )

    def load(self) -> Any:
        """The backend, loaded once per process (a bad model id fails here), after reading the
        prompt overrides (a bad template fails here)."""
        from tasks.backends import get_backend
        from tasks.templates.prompt_overrides import load_overrides

        load_overrides(self.prompts)
        return get_backend(self.backend, self.model)

    def ids(self) -> dict[str, str]:
        """The model and backend ids, as every technique task takes them."""
        return {"model": self.model, "backend": self.backend}


class Sampling(Group):
    """How the model samples."""

    temperature: Temperature = Field(
        0.7, description="Sampling temperature for writing instructions (the user's turn)."
    )
    response_temperature: Temperature = Field(
        0.3, description="Sampling temperature for responses (0 is greedy)."
    )
    max_new_tokens: Positive = Field(256, description="Longest response, in tokens.")
    seed: int = Field(
        0, description="Run seed: fixes the sampling and every seeded choice (mutations, examples, prompts)."
    )

    def instructions(self, max_new_tokens: int, **more: Any) -> GenerationParams:
        """Generation parameters for writing instructions (or a user's turn)."""
        return GenerationParams(
            max_new_tokens=max_new_tokens, temperature=self.temperature, seed=self.seed, **more
        )

    def responses(self) -> GenerationParams:
        """Generation parameters for writing responses."""
        return GenerationParams(
            max_new_tokens=self.max_new_tokens, temperature=self.response_temperature, seed=self.seed
        )


class Batching(Group):
    """How the work is cut into task runs."""

    batch_size: Positive = Field(
        32, description="Rows per task run: the unit of caching, retries and resume."
    )


class Output(Group):
    """Where the dataset is written, and whether it is pushed to the Hub."""

    output_dir: Path = Field(
        Path("output"), description="Where the dataset directory is written (replaced whole on success)."
    )
    versioned: bool = Field(
        False, description="Write a new dated directory under output_dir instead (scheduled refreshes)."
    )
    keep_versions: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="With versioned, keep only the newest N dated versions (older ones are deleted after "
        "a successful save; the one `latest` points to is always kept). Default: all.",
    )
    push_to_hub: str | None = Field(
        None, description="Hub dataset repo id to push the data and card to (token from HF_TOKEN)."
    )
    private: bool = Field(True, description="Make a pushed dataset private.")
    license: str = Field(
        "other",
        description='The card\'s licence, a Hub identifier (apache-2.0, cc-by-4.0, ...). Default "other": '
        "the data's terms follow the model's licence and the seeds', which only you can check.",
    )

    def check(self) -> None:
        """Before any model call: the output directory can take the dataset, and a push has a token
        that the Hub accepts and that may write to the repository."""
        from tasks.data.dataset import check_output_dir
        from tasks.data.hub import check_hub

        check_output_dir(self.output_dir, self.versioned)
        if self.push_to_hub:
            check_hub(self.push_to_hub)


def groups(fn: Callable) -> dict[str, Group]:
    """`fn`'s grouped parameters and their defaults (the flow's own values for each field)."""
    parameters = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in parameters if isinstance(p.default, Group)}


def nest(fn: Callable, parameters: dict[str, Any]) -> dict[str, Any]:
    """`parameters` with every field given flat (`temperature=...`) or as a partial group
    (`sampling={"seed": 1}`) moved into its whole group, the rest from `fn`'s defaults."""
    out = dict(parameters)
    for name, default in groups(fn).items():
        fields = {f: out.pop(f) for f in type(default).model_fields if f in out}
        given = out.get(name)
        if given is None and not fields:
            continue
        if isinstance(given, BaseModel):
            given = given.model_dump(exclude_unset=True)
        out[name] = {**default.model_dump(), **(given or {}), **fields}
    return out


def flat(parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters with each group's fields in its place, as flags and recipes name them."""
    out: dict[str, Any] = {}
    for name, value in parameters.items():
        out.update(dict(value) if isinstance(value, Group) else {name: value})
    return out


class GroupedFlow(Flow):
    """A Prefect flow whose shared parameters are groups, called (and validated) with fields given
    flat or as partial groups too: see `nest`. A deployment that sets `output: {output_dir: x}`
    keeps this flow's other `output` defaults."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(*args, **nest(self.fn, kwargs))

    def validate_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        return super().validate_parameters(nest(self.fn, parameters))

    def with_options(self, **options: Any) -> GroupedFlow:
        copy = super().with_options(**options)
        copy.__class__ = GroupedFlow  # Prefect's copy is a plain Flow
        return copy


def grouped_flow(name: str, **options: Any) -> Callable[[Callable], GroupedFlow]:
    """`@flow(name=name, **options)`, making a `GroupedFlow`; by default its runs are named after
    the output directory and its tasks run on 8 threads (a bound: each holds a batch in memory)."""
    from prefect.task_runners import ThreadPoolTaskRunner

    from tasks.data.publish import run_name

    options = {"flow_run_name": run_name, "task_runner": ThreadPoolTaskRunner(max_workers=8), **options}
    return lambda fn: GroupedFlow(fn, name=name, **options)


T = TypeVar("T")
# What the CLI's preflight checked, for the run it is about to start: (parameters, result).
_checked: ContextVar[tuple[dict[str, Any], Any] | None] = ContextVar("checked", default=None)


def checked(check: Callable[..., T], parameters: dict[str, Any]) -> T:
    """`check(**parameters)`, remembered for the flow run the CLI starts next with these parameters,
    so that `inputs` there does not ask the Hub, a server or the seed files again."""
    result = check(**parameters)
    _checked.set((parameters, result))
    return result


def inputs(check: Callable[..., T]) -> T:
    """The running flow's inputs, checked once: `check(**parameters)` (everything a user can get wrong,
    before any model call), or what the CLI's preflight already returned for these parameters."""
    context = FlowRunContext.get()
    parameters = dict(context.parameters) if context else {}
    done = _checked.get()
    _checked.set(None)  # for the one run the CLI starts next
    if done is not None and done[0] == parameters:
        return done[1]
    return check(**parameters)
