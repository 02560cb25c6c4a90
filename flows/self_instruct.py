"""Self-Instruct as the paper does it (Wang et al., 2022, arXiv:2212.10560): bootstrap new
instructions from a small pool of seed tasks, round by round, then answer them.

Run `python flows/self_instruct.py --help` for the parameters (the flow's own, in kebab-case).
"""

from pathlib import Path

from tasks.data.publish import publish
from tasks.data.seed_tasks import load_seed_tasks
from tasks.pipeline.batching import Ledger, map_batches, run_batch
from tasks.pipeline.parameters import (
    Batching,
    Fraction,
    Model,
    NonNegative,
    Output,
    Positive,
    Sampling,
    get_run_logger,
    grouped_flow,
    inputs,
)
from tasks.pipeline.progress import stage_progress
from tasks.pipeline.targets import shortfall_message
from tasks.respond import generate_responses
from tasks.rows import Row, drop
from tasks.self_instruct import STAGE, bootstrap_instructions
from tasks.templates.prompt_overrides import load_overrides


def check_inputs(seed_tasks: str | None, llm: Model, output: Output, **_: object) -> list[Row]:
    """Everything a user can get wrong, checked before any model call; returns the seed tasks."""
    output.check()
    seed_rows = load_seed_tasks(seed_tasks)
    llm.load()  # once per process; a bad model id or template fails here
    return seed_rows


@grouped_flow("self_instruct")
def self_instruct(
    seed_tasks: str | None = None,
    num_instructions: Positive = 100,
    max_rounds: Positive = 50,
    prompts_per_round: Positive = 8,
    num_seed_examples: Positive = 6,
    num_generated_examples: NonNegative = 2,
    similarity_threshold: Fraction = 0.7,
    max_instruction_tokens: Positive = 256,
    system_prompt: str | None = None,
    llm: Model = Model(),
    sampling: Sampling = Sampling(),
    batching: Batching = Batching(),
    output: Output = Output(output_dir=Path("output/self_instruct")),
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
        max_instruction_tokens: Most tokens generated per bootstrap prompt.
        system_prompt: Optional system prompt for the response step.
        llm: The model that writes, its backend and prompt templates (here
            self_instruct/bootstrap.jinja, respond.jinja).
        sampling: Temperatures, response length and the run seed (it fixes each round's in-context
            examples too).
        batching: Instructions per response task run.
        output: Where the dataset is written and pushed.
    """
    logger = get_run_logger()
    seed_rows = inputs(check_inputs)
    overrides = load_overrides(llm.prompts)  # templates that shadow the shipped ones
    common = {**llm.ids(), "prompt_overrides": overrides}
    # The paper stops each completion at a blank line: the numbered list is over.
    bootstrap = {
        "seed_tasks": seed_rows,
        "prompts_per_round": prompts_per_round,
        "num_seed_examples": num_seed_examples,
        "num_generated_examples": num_generated_examples,
        "similarity_threshold": similarity_threshold,
        "seed": sampling.seed,
        "params": sampling.instructions(max_instruction_tokens, stop=("\n\n",)),
    }
    respond = {"params": sampling.responses(), "system_prompt": system_prompt}
    logger.info("Loaded %d seed tasks; model %s (%s)", len(seed_rows), llm.model, llm.backend)

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
                result = run_batch(
                    bootstrap_instructions, generated, round_, round=round_, **bootstrap, **common
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
            answered = map_batches(generate_responses, batch, batching.batch_size, **respond, **common)
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
    return publish("self_instruct", final, ledger, len(seed_rows), output, extra, overrides)


if __name__ == "__main__":
    from tasks.pipeline.cli import main

    main(self_instruct, preflight=check_inputs)
