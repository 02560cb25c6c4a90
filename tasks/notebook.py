"""Every technique on a list of dicts, in a notebook or a script, without writing a flow:

    from tasks import notebook
    rows, drops = notebook.generate([{"topic": "tides"}], "Write a haiku about {{ topic }}.", "haiku")

Each function is named for its technique (`generate`, `respond`, `passage_queries`, and
`evolve` for `evol_instruct`) and calls that technique's plain function (the Prefect task's
`.fn`) batch by batch in this process: no Prefect server, no cache, no retries; the rows and drop
records are the ones the flows get. The model defaults to the embedded SmolLM2-135M-Instruct;
generation parameters are keyword arguments (`temperature=0.2, max_new_tokens=64, seed=1`). To
try your own versions of the shipped templates (the flows' `--prompts DIR`), call inside
`with prompts.overriding(prompt_overrides.load_overrides("my_prompts")):`.
"""

from __future__ import annotations

import json
from typing import Any

from tasks.backends import GenerationParams
from tasks.backends.embedded import EMBEDDED_MODEL
from tasks.evol_instruct import MUTATIONS, evolve_instructions
from tasks.generate import DEFAULT_CHECKS, generate_text
from tasks.passage_queries import generate_instructions
from tasks.pipeline.batching import chunk
from tasks.respond import generate_responses
from tasks.rows import Row, stable_id

Result = tuple[list[Row], list[dict[str, Any]]]


def run_batches(task: Any, rows: list[Row], batch_size: int, **inputs: Any) -> Result:
    """`task.fn` over `rows` in batches, in order, with the same other `inputs`: (rows, drop records)."""
    out_rows: list[Row] = []
    drops: list[dict[str, Any]] = []
    for index, batch in enumerate(chunk(rows, batch_size)):
        result = task.fn(batch, batch_index=index, **inputs)
        out_rows += result["rows"]
        drops += result["drops"]
    return out_rows, drops


def with_ids(rows: list[Row]) -> list[Row]:
    """Rows as given, each with a stable `id` (a hash of its content) where it has none."""
    return [
        row if "id" in row else {**row, "id": stable_id(json.dumps(row, sort_keys=True, default=str))}
        for row in rows
    ]


def generate(
    rows: list[Row],
    template: str,
    output_column: str = "text",
    *,
    num_generations: int = 1,
    system_prompt: str | None = None,
    stage: str | None = None,
    checks: tuple[str, ...] = DEFAULT_CHECKS,
    keep_truncated: bool = True,
    model: str = EMBEDDED_MODEL,
    backend: str = "transformers",
    batch_size: int = 8,
    **params: Any,
) -> Result:
    """Basic prompting (tasks/generate.py): `template` (a prompts/ file name or inline text)
    rendered over each row; the options are `generate_text`'s."""
    return run_batches(
        generate_text,
        with_ids(rows),
        batch_size,
        template=template,
        output_column=output_column,
        num_generations=num_generations,
        system_prompt=system_prompt,
        stage=stage,
        checks=checks,
        keep_truncated=keep_truncated,
        model=model,
        backend=backend,
        params=GenerationParams(**params),
    )


def respond(
    rows: list[Row],
    *,
    system_prompt: str | None = None,
    model: str = EMBEDDED_MODEL,
    backend: str = "transformers",
    batch_size: int = 8,
    **params: Any,
) -> Result:
    """A `response` to each row's `instruction` (tasks/respond.py)."""
    inputs = {"system_prompt": system_prompt, "model": model, "backend": backend}
    return run_batches(
        generate_responses, with_ids(rows), batch_size, **inputs, params=GenerationParams(**params)
    )


def passage_queries(
    rows: list[Row],
    num_instructions: int = 5,
    *,
    model: str = EMBEDDED_MODEL,
    backend: str = "transformers",
    batch_size: int = 8,
    **params: Any,
) -> Result:
    """SelfInstruct on passages (tasks/passage_queries.py, the main job's first step): up to
    `num_instructions` user queries grounded in each row's `context`."""
    seeds = [{"seed_id": row.get("seed_id") or stable_id(row["context"]), **row} for row in rows]
    inputs = {"num_instructions": num_instructions, "model": model, "backend": backend}
    return run_batches(generate_instructions, seeds, batch_size, **inputs, params=GenerationParams(**params))


# The name this function had before tasks/self_instruct.py came to mean the paper's bootstrap:
# notebooks written against it keep working.
self_instruct = passage_queries


def evolve(
    rows: list[Row],
    rounds: int = 1,
    mutations: tuple[str, ...] = MUTATIONS,
    *,
    model: str = EMBEDDED_MODEL,
    backend: str = "transformers",
    batch_size: int = 8,
    **params: Any,
) -> Result:
    """EvolInstruct (tasks/evol_instruct.py): `rounds` rewrites of each row's `instruction`; a
    failed one keeps its parent."""
    rows = [_evolvable(row) for row in with_ids(rows)]
    drops: list[dict[str, Any]] = []
    generation = GenerationParams(**{"max_new_tokens": 160, **params})
    inputs = {"mutations": list(mutations), "seed": generation.seed, "model": model, "backend": backend}
    for round_ in range(1, rounds + 1):
        rows, new_drops = run_batches(
            evolve_instructions, rows, batch_size, round=round_, **inputs, params=generation
        )
        drops += new_drops
    return rows, drops


def _evolvable(row: Row) -> Row:
    """A row with the lineage fields EvolInstruct extends (a fresh instruction starts them)."""
    fresh = {"lineage": [row["instruction"]], "mutations": [], "evol_depth": 0, "evol_drops": []}
    return {**fresh, **row}
