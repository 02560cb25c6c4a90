"""Basic prompting in two steps, the pipeline people start with: from a description of what a user
wants, the model writes the user's message, then answers it.

Run `python flows/generate.py --help` for the parameters (the flow's own, in kebab-case).
"""

import tasks  # noqa: F401  (first: sets Prefect's defaults before prefect is imported)

# isort: split
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from tasks.backends import BackendId, GenerationParams, get_backend
from tasks.backends.embedded import EMBEDDED_MODEL
from tasks.data.publish import check_destination, publish, run_name
from tasks.data.seeds import load_texts
from tasks.generate import check_step, generate_text
from tasks.pipeline.batching import Ledger, map_batches
from tasks.pipeline.targets import shortfall_message
from tasks.respond import CHECKS as RESPONSE_CHECKS
from tasks.rows import drop_duplicates
from tasks.templates.prompt_overrides import load_overrides
from tasks.templates.prompts import overriding, render_template

DEFAULT_ROWS = Path(__file__).resolve().parents[1] / "data" / "seed_instructions.jsonl"
Positive = Annotated[int, Field(gt=0)]


def check_inputs(
    rows: str | None,
    instruction: list[str] | None,
    column: str,
    prompt_template: str,
    response_template: str,
    num_generations: int,
    temperature: float,
    model: str,
    backend: str,
    output_dir: Path,
    versioned: bool = False,
    push_to_hub: str | None = None,
    prompts: Path | None = None,
) -> list[dict]:
    """Everything a user can get wrong, checked before any model call; returns the input rows."""
    check_destination(output_dir, versioned, push_to_hub)
    if num_generations > 1 and temperature == 0:
        raise ValueError("--num-generations above 1 needs a --temperature above 0 (greedy samples repeat).")
    source = rows or (None if instruction else DEFAULT_ROWS)
    seed_rows = load_texts(source, column, name="seed_instruction", texts=instruction)
    with overriding(load_overrides(prompts)):
        check_step(prompt_template, "instruction", num_generations, ())
        check_step(response_template, "response", 1, ())
        # Render both steps for the first row, so a template that needs a missing column fails now.
        render_template(prompt_template, **seed_rows[0])
        render_template(response_template, **seed_rows[0], instruction="(the written message)")
    get_backend(backend, model)  # loads the model once per process; a bad id fails here
    return seed_rows


@flow(
    name="generate",
    flow_run_name=run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=8),
)
def generate(
    rows: str | None = None,
    instruction: list[str] | None = None,
    column: str = "instruction",
    prompt_template: str = "generate/write_prompt.jinja",
    response_template: str = "respond.jinja",
    num_generations: Positive = 1,
    model: str = EMBEDDED_MODEL,
    backend: BackendId = "transformers",
    prompts: Path | None = None,
    temperature: Annotated[float, Field(ge=0)] = 0.7,
    response_temperature: Annotated[float, Field(ge=0)] = 0.3,
    max_new_tokens: Positive = 256,
    system_prompt: str | None = None,
    batch_size: Positive = 32,
    seed: int = 0,
    output_dir: Path = Path("output/generate"),
    versioned: bool = False,
    keep_versions: Annotated[int, Field(ge=1)] | None = None,
    push_to_hub: str | None = None,
    private: bool = True,
    license: str = "other",
) -> dict:
    """Write a user message for each described request, then answer it.

    Args:
        rows: Input rows: a .jsonl or .txt (blank-line separated) file, a saved dataset directory,
            or a Hub dataset id. Default: the examples shipped in data/ (unless --instruction).
        instruction: Describe what a user wants, on the command line; repeat the flag for more rows.
        column: Column of the input rows that holds the description.
        prompt_template: Step 1 template (variable `seed_instruction`, and any other input column):
            a file under prompts/ (a name ending in .jinja) or the template text itself.
        response_template: Step 2 template (variable `instruction`, the written message).
        num_generations: User messages to write per input row (sample k uses seed + k).
        model: Model id: the embedded default, a local model directory, or a Hub id.
        backend: `transformers` runs the model locally; `fake` is a deterministic stand-in.
        prompts: A directory of .jinja templates that replace the shipped ones of the same name
            (here generate/write_prompt.jinja, respond.jinja): try a prompt without editing prompts/.
        temperature: Sampling temperature for writing the user messages.
        response_temperature: Sampling temperature for responses (0 is greedy).
        max_new_tokens: Longest response, in tokens.
        system_prompt: Optional system prompt for the response step.
        batch_size: Rows per task run: the unit of caching, retries and resume.
        seed: Run seed: fixes sampling.
        output_dir: Where the dataset directory is written (replaced whole on success).
        versioned: Write a new dated directory under output_dir instead (scheduled refreshes).
        keep_versions: With versioned, keep only the newest N dated versions (older ones are
            deleted after a successful save; the one `latest` points to is always kept). Default: all.
        push_to_hub: Hub dataset repo id to push the data and card to (token from HF_TOKEN).
        private: Make a pushed dataset private.
        license: The card's licence, a Hub identifier (apache-2.0, cc-by-4.0, ...). Default "other":
            the data's terms follow the model's licence and the seeds', which only you can check.
    """
    logger = get_run_logger()
    args = (rows, instruction, column, prompt_template, response_template, num_generations, temperature)
    seed_rows = check_inputs(*args, model, backend, output_dir, versioned, push_to_hub, prompts)
    overrides = load_overrides(prompts)  # templates that shadow the shipped ones
    common = {"model": model, "backend": backend, "prompt_overrides": overrides}
    # A user's message is a sentence or two; one still going after 96 tokens has started answering.
    prompt_params = GenerationParams(max_new_tokens=96, temperature=temperature, seed=seed)
    response_params = GenerationParams(
        max_new_tokens=max_new_tokens, temperature=response_temperature, seed=seed
    )
    logger.info("Loaded %d rows; model %s (%s)", len(seed_rows), model, backend)
    ledger = Ledger()

    # 1. The model writes the message a user would send, from each row's description.
    written = map_batches(
        generate_text,
        seed_rows,
        batch_size,
        template=prompt_template,
        output_column="instruction",
        stage="write_prompt",
        num_generations=num_generations,
        checks=("empty", "degenerate", "not_a_request", "mentions_prompt", "echo_of_prompt"),
        keep_truncated=False,  # a message cut off mid-sentence is not one a user sent
        params=prompt_params,
        **common,
    )
    messages, duplicates = drop_duplicates(ledger.rows(written, "write_prompt"))
    ledger.drops += duplicates
    logger.info("Step 1: %d user messages from %d rows", len(messages), len(seed_rows))

    # 2. The model answers each message.
    answered = map_batches(
        generate_text,
        messages,
        batch_size,
        template=response_template,
        output_column="response",
        stage="respond",
        checks=RESPONSE_CHECKS,
        system_prompt=system_prompt,
        params=response_params,
        **common,
    )
    final = ledger.rows(answered, "respond")
    # Each step draws a failed reply again with new seeds; a row still without one is reported.
    target = len(seed_rows) * num_generations
    if len(final) < target:
        logger.warning(shortfall_message(len(final), target, 1, ledger.drops))
    return publish(
        "generate",
        final,
        ledger,
        len(seed_rows),
        output_dir,
        push_to_hub,
        private,
        versioned,
        {"target_rows": target},
        prompt_overrides=overrides,
    )


if __name__ == "__main__":
    from tasks.pipeline.cli import main

    main(generate, preflight=check_inputs)
