"""Basic prompting in two steps, the pipeline people start with: from a description of what a user
wants, the model writes the user's message, then answers it.

Run `python flows/generate.py --help` for the parameters (the flow's own, in kebab-case).
"""

from pathlib import Path

from tasks.data.publish import publish
from tasks.data.seeds import load_texts
from tasks.generate import check_step, generate_text
from tasks.pipeline.batching import Ledger, map_batches
from tasks.pipeline.parameters import (
    Batching,
    Model,
    Output,
    Positive,
    Sampling,
    get_run_logger,
    grouped_flow,
    inputs,
)
from tasks.pipeline.targets import shortfall_message
from tasks.respond import CHECKS as RESPONSE_CHECKS
from tasks.rows import drop_duplicates
from tasks.templates.prompt_overrides import load_overrides
from tasks.templates.prompts import overriding, render_template

DEFAULT_ROWS = Path(__file__).resolve().parents[1] / "data" / "seed_instructions.jsonl"


def check_inputs(
    rows: str | None,
    instruction: list[str] | None,
    column: str,
    prompt_template: str,
    response_template: str,
    num_generations: int,
    llm: Model,
    sampling: Sampling,
    output: Output,
    **_: object,
) -> list[dict]:
    """Everything a user can get wrong, checked before any model call; returns the input rows."""
    output.check()
    if num_generations > 1 and sampling.temperature == 0:
        raise ValueError("--num-generations above 1 needs a --temperature above 0 (greedy samples repeat).")
    source = rows or (None if instruction else DEFAULT_ROWS)
    seed_rows = load_texts(source, column, name="seed_instruction", texts=instruction)
    with overriding(load_overrides(llm.prompts)):
        check_step(prompt_template, "instruction", num_generations, ())
        check_step(response_template, "response", 1, ())
        # Render both steps for the first row, so a template that needs a missing column fails now.
        render_template(prompt_template, **seed_rows[0])
        render_template(response_template, **seed_rows[0], instruction="(the written message)")
    llm.load()  # once per process; a bad model id fails here
    return seed_rows


@grouped_flow("generate")
def generate(
    rows: str | None = None,
    instruction: list[str] | None = None,
    column: str = "instruction",
    prompt_template: str = "generate/write_prompt.jinja",
    response_template: str = "respond.jinja",
    num_generations: Positive = 1,
    system_prompt: str | None = None,
    llm: Model = Model(),
    sampling: Sampling = Sampling(),
    batching: Batching = Batching(),
    output: Output = Output(output_dir=Path("output/generate")),
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
        system_prompt: Optional system prompt for the response step.
        llm: The model that writes, its backend and prompt templates (here
            generate/write_prompt.jinja, respond.jinja).
        sampling: Temperatures, response length and the run seed.
        batching: Rows per task run.
        output: Where the dataset is written and pushed.
    """
    logger = get_run_logger()
    seed_rows = inputs(check_inputs)
    overrides = load_overrides(llm.prompts)  # templates that shadow the shipped ones
    common = {**llm.ids(), "prompt_overrides": overrides}
    logger.info("Loaded %d rows; model %s (%s)", len(seed_rows), llm.model, llm.backend)
    ledger = Ledger()

    # 1. The model writes the message a user would send, from each row's description.
    written = map_batches(
        generate_text,
        seed_rows,
        batching.batch_size,
        template=prompt_template,
        output_column="instruction",
        stage="write_prompt",
        num_generations=num_generations,
        checks=("empty", "degenerate", "not_a_request", "mentions_prompt", "echo_of_prompt"),
        keep_truncated=False,  # a message cut off mid-sentence is not one a user sent
        # A user's message is a sentence or two; one still going after 96 tokens has started answering.
        params=sampling.instructions(max_new_tokens=96),
        **common,
    )
    messages, duplicates = drop_duplicates(ledger.rows(written, "write_prompt"))
    ledger.drops += duplicates
    logger.info("Step 1: %d user messages from %d rows", len(messages), len(seed_rows))

    # 2. The model answers each message.
    answered = map_batches(
        generate_text,
        messages,
        batching.batch_size,
        template=response_template,
        output_column="response",
        stage="respond",
        checks=RESPONSE_CHECKS,
        system_prompt=system_prompt,
        params=sampling.responses(),
        **common,
    )
    final = ledger.rows(answered, "respond")
    # Each step draws a failed reply again with new seeds; a row still without one is reported.
    target = len(seed_rows) * num_generations
    if len(final) < target:
        logger.warning(shortfall_message(len(final), target, 1, ledger.drops))
    return publish("generate", final, ledger, len(seed_rows), output, {"target_rows": target}, overrides)


if __name__ == "__main__":
    from tasks.pipeline.cli import main

    main(generate, preflight=check_inputs)
