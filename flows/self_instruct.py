"""Self-Instruct as the paper does it (Wang et al., 2022, arXiv:2212.10560): bootstrap new
instructions from a small pool of seed tasks, round by round, then answer them.

Run `python flows/self_instruct.py --help` for the parameters (the flow's own, in kebab-case).
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
from tasks.data.seed_tasks import load_seed_tasks
from tasks.pipeline.batching import Ledger, map_batches
from tasks.pipeline.progress import stage_progress
from tasks.pipeline.targets import shortfall_message
from tasks.respond import generate_responses
from tasks.rows import Row, drop
from tasks.self_instruct import STAGE, bootstrap_instructions
from tasks.templates.prompt_overrides import load_overrides

Positive = Annotated[int, Field(gt=0)]


def check_inputs(
    seed_tasks: str | None,
    model: str,
    backend: str,
    output_dir: Path,
    versioned: bool = False,
    push_to_hub: str | None = None,
    prompts: Path | None = None,
) -> list[Row]:
    """Everything a user can get wrong, checked before any model call; returns the seed tasks."""
    check_destination(output_dir, versioned, push_to_hub)
    seed_rows = load_seed_tasks(seed_tasks)
    load_overrides(prompts)
    get_backend(backend, model)  # loads the model once per process; a bad id fails here
    return seed_rows


@flow(
    name="self_instruct",
    flow_run_name=run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=8),
)
def self_instruct(
    seed_tasks: str | None = None,
    num_instructions: Positive = 100,
    max_rounds: Positive = 50,
    prompts_per_round: Positive = 8,
    num_seed_examples: Positive = 6,
    num_generated_examples: Annotated[int, Field(ge=0)] = 2,
    similarity_threshold: Annotated[float, Field(gt=0, le=1)] = 0.7,
    model: str = EMBEDDED_MODEL,
    backend: BackendId = "transformers",
    prompts: Path | None = None,
    temperature: Annotated[float, Field(ge=0)] = 0.7,
    max_instruction_tokens: Positive = 256,
    response_temperature: Annotated[float, Field(ge=0)] = 0.3,
    max_new_tokens: Positive = 256,
    system_prompt: str | None = None,
    batch_size: Positive = 32,
    seed: int = 0,
    output_dir: Path = Path("output/self_instruct"),
    versioned: bool = False,
    keep_versions: Annotated[int, Field(ge=1)] | None = None,
    push_to_hub: str | None = None,
    private: bool = True,
    license: str = "other",
) -> dict:
    """Bootstrap instructions from seed tasks with Self-Instruct, then generate their responses.

    Args:
        seed_tasks: Seed tasks: a JSONL file in the paper's seed_tasks.jsonl format (or with
            "instruction"/"input"/"output" columns), a saved dataset directory or a Hub id.
            Default: the tasks shipped in data/seed_tasks.jsonl.
        num_instructions: New instructions to generate (the pool grows until it holds this many).
        max_rounds: Most bootstrap rounds; the run stops earlier once enough instructions are kept.
        prompts_per_round: Prompts per round, each with its own sample of in-context examples.
        num_seed_examples: Seed tasks shown in each prompt (the paper uses 6).
        num_generated_examples: Earlier generated instructions shown in each prompt (the paper uses 2).
        similarity_threshold: A new instruction is kept only if its ROUGE-L with every instruction
            in the pool is below this (the paper uses 0.7).
        model: Model id: the embedded default, a local model directory, or a Hub id.
        backend: `transformers` runs the model locally; `fake` is a deterministic stand-in.
        prompts: A directory of .jinja templates that replace the shipped ones of the same name
            (here self_instruct/bootstrap.jinja, respond.jinja): try a prompt without editing prompts/.
        temperature: Sampling temperature for writing instructions.
        max_instruction_tokens: Most tokens generated per bootstrap prompt.
        response_temperature: Sampling temperature for responses (0 is greedy).
        max_new_tokens: Longest response, in tokens.
        system_prompt: Optional system prompt for the response step.
        batch_size: Instructions per response task run: the unit of caching, retries and resume.
        seed: Run seed: fixes each round's in-context examples and the sampling.
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
    seed_rows = check_inputs(seed_tasks, model, backend, output_dir, versioned, push_to_hub)
    overrides = load_overrides(prompts)  # templates that shadow the shipped ones
    common = {"model": model, "backend": backend, "prompt_overrides": overrides}
    # The paper stops each completion at a blank line: the numbered list is over.
    bootstrap_params = GenerationParams(
        max_new_tokens=max_instruction_tokens, temperature=temperature, seed=seed, stop=("\n\n",)
    )
    response_params = GenerationParams(
        max_new_tokens=max_new_tokens, temperature=response_temperature, seed=seed
    )
    logger.info("Loaded %d seed tasks; model %s (%s)", len(seed_rows), model, backend)

    # 1. Bootstrap: each round samples in-context examples from the pool, asks for new tasks and
    #    keeps those that pass the filters and are not similar to any instruction in the pool.
    # 2. A response for every new instruction; an instruction whose response fails every draw is
    #    replaced by bootstrapping further, until `num_instructions` rows are answered.
    ledger = Ledger()
    generated: list[Row] = []  # the pool's generated instructions, in the order they were kept
    final: list[Row] = []
    rounds: list[dict] = []
    round_, answered_up_to = 0, 0
    with stage_progress(STAGE, num_instructions, "rows", log_every=num_instructions) as advance:
        while (need := num_instructions - len(final)) > 0:
            while len(generated) - answered_up_to < need and round_ < max_rounds:
                round_ += 1
                result = bootstrap_instructions(
                    generated,
                    batch_index=round_,
                    round=round_,
                    seed_tasks=seed_rows,
                    prompts_per_round=prompts_per_round,
                    num_seed_examples=num_seed_examples,
                    num_generated_examples=num_generated_examples,
                    similarity_threshold=similarity_threshold,
                    seed=seed,
                    params=bootstrap_params,
                    **common,
                )
                generated += ledger.rows(result, STAGE)
                rounds.append({"round": round_, "kept": len(result["rows"]), "dropped": len(result["drops"])})
                logger.info(
                    "Round %d: kept %d, dropped %d", round_, len(result["rows"]), len(result["drops"])
                )
            batch = generated[answered_up_to : answered_up_to + need]
            if not batch:
                break
            answered_up_to += len(batch)
            answered = map_batches(
                generate_responses,
                batch,
                batch_size,
                params=response_params,
                system_prompt=system_prompt,
                **common,
            )
            final += ledger.rows(answered, "respond")
            advance(len(answered["rows"]))
    if len(final) < num_instructions:
        logger.warning(shortfall_message(len(final), num_instructions, round_, ledger.drops))
    # The last round may overshoot: instructions never answered are set aside.
    ledger.drops += [
        {**drop(STAGE, "over_count", row, row["instruction"]), "round": row["round"]}
        for row in generated[answered_up_to:]
    ]
    extra = {"rounds": rounds, "target_rows": num_instructions}
    return publish(
        "self_instruct",
        final,
        ledger,
        len(seed_rows),
        output_dir,
        push_to_hub,
        private,
        versioned,
        extra,
        prompt_overrides=overrides,
    )


if __name__ == "__main__":
    from tasks.pipeline.cli import main

    main(self_instruct, preflight=check_inputs)
