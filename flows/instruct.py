"""SelfInstruct -> EvolInstruct -> responses: an instruction dataset from seed passages.

Run `python flows/instruct.py --help` for the parameters (the flow's own, in kebab-case).
"""

from pathlib import Path
from typing import Literal

from tasks.backends import GenerationParams
from tasks.data.publish import publish
from tasks.data.seeds import load_seeds
from tasks.evol_instruct import MUTATIONS, evolve_instructions, fall_back_to_parent
from tasks.passage_queries import ATTEMPTS, generate_instructions
from tasks.pipeline.artifacts import RunProgress
from tasks.pipeline.batching import Ledger, map_batches
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
from tasks.pipeline.targets import by_seed, missing, shortfall_message, take
from tasks.quality.near_duplicates import EXACT_UP_TO, drop_near_duplicates
from tasks.respond import generate_responses
from tasks.rows import Row, drop_duplicates, in_order
from tasks.templates.prompt_overrides import load_overrides

Mutation = Literal["constraints", "deepening", "concretizing", "reasoning", "complicate_input", "breadth"]


def check_inputs(seeds: str | None, seed_column: str, llm: Model, output: Output, **_: object) -> list[Row]:
    """Everything a user can get wrong, checked before any model call; returns the seed rows."""
    output.check()
    seed_rows = load_seeds(seeds, seed_column)
    llm.load()  # once per process; a bad model id or template fails here
    return seed_rows


@grouped_flow("instruct")
def instruct(
    seeds: str | None = None,
    seed_column: str = "context",
    num_instructions: Positive = 5,
    num_evolutions: NonNegative = 1,
    mutations: tuple[Mutation, ...] = MUTATIONS,
    system_prompt: str | None = None,
    ground_responses: bool = True,
    near_duplicate_threshold: Fraction = 0.7,
    max_rounds: Positive = 5,
    llm: Model = Model(),
    sampling: Sampling = Sampling(),
    batching: Batching = Batching(),
    output: Output = Output(output_dir=Path("output/instruct")),
) -> dict:
    """Generate instruction/response pairs from seed passages with SelfInstruct and EvolInstruct.

    Args:
        seeds: Seed passages: a .txt (blank-line separated) or .jsonl file, a saved dataset
            directory, or a Hub dataset id. Default: the passages shipped in data/.
        seed_column: Column that holds the passage text in a JSONL file or dataset.
        num_instructions: User queries to write per seed passage (SelfInstruct).
        num_evolutions: Rounds of EvolInstruct rewriting applied to every query (0 skips it).
        mutations: Evolutions to choose from each round (five in-depth, one in-breadth).
        system_prompt: Optional system prompt for the response step.
        ground_responses: Answer each instruction with its seed passage as reference material, so
            the answer's facts come from the passage (the instruction itself stays self-contained).
        near_duplicate_threshold: Drop an instruction whose ROUGE-L with an earlier kept one is at
            least this (the Self-Instruct paper uses 0.7; 1 keeps all but exact duplicates).
        max_rounds: Rounds of generation for passages still short of num_instructions rows after
            the filters; the run stops earlier once every passage has its rows.
        llm: The model that writes, its backend and prompt templates.
        sampling: Temperatures, response length and the run seed.
        batching: Rows per task run.
        output: Where the dataset is written and pushed.
    """
    logger = get_run_logger()
    seed_rows = inputs(check_inputs)
    overrides = load_overrides(llm.prompts)  # templates that shadow the shipped ones
    common = {**llm.ids(), "prompt_overrides": overrides}
    size = batching.batch_size
    instruction_params = sampling.instructions(max_new_tokens=256)
    # A rewrite adds 10-20 words; one still going after 160 tokens is answering, not rewriting.
    evolution_params = sampling.instructions(max_new_tokens=160)
    respond = {"params": sampling.responses(), "system_prompt": system_prompt, "grounded": ground_responses}
    logger.info("Loaded %d seed passages; model %s (%s)", len(seed_rows), llm.model, llm.backend)

    ledger = Ledger()
    progress = RunProgress("instruct", total=num_evolutions + 2)
    targets = {s["seed_id"]: num_instructions for s in seed_rows}
    final: list[Row] = []
    evolutions: dict[int, dict[str, int]] = {}
    # Each round writes rows for the passages still short of `num_instructions` (filters drop many
    # of a small model's generations); seeds that cannot take a prompt or failed sit out.
    rounds_run = 0
    for round_ in range(1, max_rounds + 1):
        if not (wanted := missing(final, targets)):
            break
        rounds_run = round_
        short = [s for s in seed_rows if s["seed_id"] in wanted]
        rows = write_instructions(short, round_, num_instructions, size, instruction_params, ledger, common)
        logger.info("SelfInstruct (round %d): %d queries from %d passages", round_, len(rows), len(short))
        first = round_ == 1  # the progress bar follows the first round; later ones top up
        if first:
            progress.advance("self_instruct")

        # 2. EvolInstruct: each round evolves every query in depth or breadth; failed evolutions
        #    keep their parent.
        for evolution in range(1, num_evolutions + 1):
            evolved = map_batches(
                evolve_instructions,
                rows,
                size,
                round=evolution,
                mutations=list(mutations),
                seed=sampling.seed,
                params=evolution_params,
                **common,
            )
            rows = ledger.rows(evolved)
            # The ledger counts the evolutions kept (one drop per evolution that was not), not the rows.
            kept_now = len(rows) - len(evolved["drops"])
            tally = evolutions.setdefault(evolution, {"round": evolution, "kept": 0, "of": 0})
            tally["kept"], tally["of"] = tally["kept"] + kept_now, tally["of"] + len(rows)
            ledger.counts[f"evol_instruct_{evolution}"] = tally["kept"]
            logger.info("EvolInstruct round %d: %d evolutions dropped", evolution, len(evolved["drops"]))
            if first:
                progress.advance(f"evol_instruct round {evolution}")

        # 3. A response for every instruction, written with its passage at hand (grounded).
        answered = map_batches(generate_responses, rows, size, **respond, **common)
        # 4. Elimination (paper rule 2): an evolution answered by a refusal falls back to its parent.
        fallbacks, answered["drops"] = fall_back_to_parent(rows, answered["drops"])
        reanswered = map_batches(generate_responses, fallbacks, size, **respond, **common)
        if first:
            progress.advance("respond")
        answered_rows = in_order(ledger.rows(answered, "respond") + ledger.rows(reanswered, "respond"), rows)

        # 5. Drop exact and near duplicates (ROUGE-L against every kept instruction, as the
        #    Self-Instruct paper filters), then keep what each passage still lacks.
        new, dropped = deduplicate([*final, *answered_rows], near_duplicate_threshold)
        new, over = take(new[len(final) :], wanted)
        ledger.drops += dropped + over
        final = by_seed(final + new, seed_rows)
        skip = {d["seed_id"] for d in ledger.drops if d["reason"] == "prompt_too_long"}
        skip |= {f["seed_id"] for f in ledger.failures}
        targets = {k: n for k, n in targets.items() if k not in skip}

    target = num_instructions * len(seed_rows)
    if len(final) < target:
        logger.warning(shortfall_message(len(final), target, rounds_run, ledger.drops))
    extra = {"target_rows": target, "rounds": rounds_run, "evolutions": list(evolutions.values())}
    return publish("instruct", final, ledger, len(seed_rows), output, extra, overrides)


def write_instructions(
    seeds: list[Row],
    round_: int,
    num_instructions: int,
    batch_size: int,
    params: GenerationParams,
    ledger: Ledger,
    common: dict,
) -> list[Row]:
    """1. SelfInstruct: user queries grounded in each seed passage; round r samples with seeds of
    its own, so a later round writes new queries for the passages still short."""
    # subtle: a task run samples seeds seed..seed+ATTEMPTS-1, so rounds step by ATTEMPTS to stay apart.
    round_params = params.model_copy(update={"seed": params.seed + ATTEMPTS * (round_ - 1)})
    queries = map_batches(
        generate_instructions,
        seeds,
        batch_size,
        num_instructions=num_instructions,
        params=round_params,
        **common,
    )
    return ledger.rows(queries, "self_instruct")


def deduplicate(rows: list[Row], threshold: float) -> tuple[list[Row], list[dict]]:
    """Exact, then near duplicates (ROUGE-L): a later row like an earlier kept one is dropped."""
    kept, duplicates = drop_duplicates(rows)
    with stage_progress("near_duplicates", len(kept), "rows", EXACT_UP_TO, log_every=10_000) as advance:
        kept, near = drop_near_duplicates(kept, "instruction", threshold, progress=advance)
    return kept, duplicates + near


if __name__ == "__main__":
    from tasks.pipeline.cli import main

    main(instruct, preflight=check_inputs)
