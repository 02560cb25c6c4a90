"""Basic prompting, the technique every other one builds on: a prompt template rendered over each
row's columns, sent to the model, and the reply written to a named column of the row.

Because the reply lands in a column, one step's output is the next step's template variable
(`output_column="prompt"`, then `template="{{ prompt }}"`): the output mapping that chains steps in
distilabel's pipelines, here without a class hierarchy. The response step of every paper we follow
(Self-Instruct, Wang et al., 2022, arXiv:2212.10560; Evol-Instruct, Xu et al., 2023,
arXiv:2304.12244; Magpie, Xu et al., 2024, arXiv:2406.08464) is this task with `respond.jinja`.

`num_generations` samples each row several times: generation k uses seed `params.seed + k`, so the
samples differ and a rerun repeats them. A reply that fails a check is drawn again with a seed of
its own before the row is given up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tasks.backends import Generation, GenerationParams, Message, get_backend
from tasks.pipeline.caching import technique_task
from tasks.quality.figures import unsupported_figure
from tasks.quality.filters import (
    degenerate,
    echoes,
    empty,
    first_reason,
    mentions_prompt,
    non_answer,
    not_a_request,
    refusal,
)
from tasks.rows import Row, drop, generation_drop, stable_id, with_stage
from tasks.templates import prompts

# Named checks a generation must pass, given its text, its row and the template it answered; a
# failure drops it with the check's reason.
CHECKS: dict[str, Callable[[str, Row, str], str | None]] = {
    "empty": lambda text, row, template: empty(text),
    "degenerate": lambda text, row, template: degenerate(text),
    "refusal": lambda text, row, template: refusal(text),
    "not_a_request": lambda text, row, template: not_a_request(text),
    "mentions_prompt": lambda text, row, template: mentions_prompt(text),
    "non_answer": lambda text, row, template: non_answer(text, row.get("instruction")),
    # a grounded answer's figures against its passage and question
    "unsupported_figure": lambda text, row, template: unsupported_figure(
        text, f"{row.get('context') or ''} {row.get('instruction') or ''}"
    ),
    "echo_of_prompt": lambda text, row, template: echoes(text, boilerplate(template, row), n=4),
}
DEFAULT_CHECKS = ("empty", "degenerate", "refusal")
# Columns every row's provenance owns; a step writing into one would corrupt it.
RESERVED = frozenset({"id", "seed_id", "model", "backend", "techniques", "templates", "generation"})


def build_messages(row: Row, template: str, system_prompt: str | None = None) -> list[Message]:
    """The chat for one row: an optional system turn, then the template rendered with the row's
    columns as variables (a column the template needs and the row lacks is an error)."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": prompts.render_template(template, **row)}]


def check_text(
    text: str, checks: tuple[str, ...] = DEFAULT_CHECKS, row: Row | None = None, template: str = ""
) -> str | None:
    """The first failed check's reason, or None when `text` passes them all."""
    return first_reason(*(CHECKS[name](text, row or {}, template) for name in checks))


def boilerplate(template: str, row: Row) -> str:
    """The template's own words: rendered with every column of `row` left empty."""
    return prompts.render_template(template, **{column: "" for column in row}) if template else ""


def check_step(template: str, output_column: str, num_generations: int, checks: tuple[str, ...]) -> None:
    """Configuration errors, raised before any model call with what to change."""
    prompts.source(template)  # a missing template file fails here
    if not output_column or output_column in RESERVED:
        raise ValueError(
            f"output_column {output_column!r} cannot be used: name a new column (reserved for "
            f"provenance: {', '.join(sorted(RESERVED))})."
        )
    if num_generations < 1:
        raise ValueError(f"num_generations must be at least 1, got {num_generations}.")
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ValueError(f"Unknown checks {unknown}; use any of: {', '.join(CHECKS)}.")


def generated_row(
    row: Row, out: Generation, k: int, num_generations: int, step: dict[str, Any], params: GenerationParams
) -> Row:
    column = step["output_column"]
    fields = {
        column: out.text.strip(),
        f"{column}_truncated": out.finish_reason == "length",
        "system_prompt": step["system_prompt"],
        "model": step["model"],
        "backend": step["backend"],
    }
    if num_generations > 1:  # each sample is a row of its own, with an id of its own
        parent = row.get("id") or stable_id(repr(sorted(row.items())))
        fields |= {"id": stable_id(parent, step["stage"], str(k)), "generation_index": k}
    return with_stage(row, step["stage"], step["template"], params, **fields)


def step_run_name() -> str:
    """A run's name in the UI: its step and batch, e.g. `respond[3]`."""
    from prefect.runtime import task_run

    params = task_run.parameters
    return f"{params.get('stage') or params['output_column']}[{params['batch_index']}]"


@technique_task("generate_text", templates=lambda inputs: [inputs["template"]], run_name=step_run_name)
def generate_text(
    rows: list[Row],
    batch_index: int,
    template: str,
    output_column: str,
    model: str,
    backend: str,
    params: GenerationParams,
    num_generations: int = 1,
    system_prompt: str | None = None,
    stage: str | None = None,
    checks: tuple[str, ...] = DEFAULT_CHECKS,
    keep_truncated: bool = True,
    max_attempts: int = 3,
    prompt_overrides: dict[str, str] | None = None,
) -> dict:
    """`num_generations` rows per input row, each with the model's reply to `template` in
    `output_column` (and `<output_column>_truncated`, `system_prompt`); a reply that fails a check
    is sampled again with another seed (up to `max_attempts` draws when sampling), then becomes a
    drop record; so is one cut off by the token limit unless `keep_truncated`. A discarded draw
    that was sampled again is recorded as `<reason>:resampled`. `stage` names the step in
    provenance (default: `output_column`)."""
    check_step(template, output_column, num_generations, checks)
    if num_generations > 1 and params.temperature == 0:
        raise ValueError("num_generations > 1 needs a temperature above 0: greedy samples are identical.")
    stage = stage or output_column
    step = {"output_column": output_column, "system_prompt": system_prompt, "stage": stage}
    step |= {"template": template, "model": model, "backend": backend}
    llm = get_backend(backend, model)
    messages = [build_messages(row, template, system_prompt) for row in rows]
    per_row: list[list[Row]] = [[] for _ in rows]
    drops: list[dict[str, Any]] = []
    # A greedy reply repeats itself, so only sampled ones are drawn again.
    attempts = max_attempts if params.temperature > 0 else 1
    for k in range(num_generations):
        pending = list(range(len(rows)))
        for attempt in range(attempts):
            # subtle: sample k's attempt a uses seed + k + a * num_generations, never another sample's.
            seed = params.seed + k + attempt * num_generations
            sample_params = params.model_copy(update={"seed": seed})
            outputs = llm.generate([messages[i] for i in pending], sample_params)
            retry = []
            for i, out in zip(pending, outputs):
                failed = generation_drop(stage, out, rows[i])
                reason = None if failed else check_text(out.text, tuple(checks), rows[i], template)
                if not reason and not keep_truncated and out.finish_reason == "length":
                    reason = "truncated"
                if failed or not reason:
                    drops += [failed] if failed else []
                    if not failed:
                        per_row[i].append(
                            generated_row(rows[i], out, k, num_generations, step, sample_params)
                        )
                elif attempt + 1 < attempts:
                    drops.append(drop(stage, f"{reason}:resampled", rows[i], out.text))
                    retry.append(i)
                else:
                    drops.append(drop(stage, reason, rows[i], out.text))
            pending = retry
            if not pending:
                break
    return {"rows": [r for rows_of_one in per_row for r in rows_of_one], "drops": drops}
