"""Magpie: instructions and conversations from an aligned chat model, prompted with nothing but the
start of a user turn (Xu et al., 2024, arXiv:2406.08464).

Run `python flows/magpie.py --help` for the parameters (the flow's own, in kebab-case).
"""

import tasks  # noqa: F401  (first: sets Prefect's defaults before prefect is imported)

# isort: split
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from tasks.backends import BackendId, GenerationParams, get_backend
from tasks.backends.embedded import EMBEDDED_MODEL
from tasks.data.publish import check_destination, publish, run_name
from tasks.magpie import generate_conversations, pre_query_template
from tasks.magpie_rows import magpie_rows, options, parse_spec
from tasks.pipeline.batching import Ledger, map_batches
from tasks.pipeline.targets import next_count, shortfall_message, take_first
from tasks.rows import drop_duplicates
from tasks.templates.chat_templates import ChatTemplate, chat_template_for
from tasks.templates.prompt_overrides import load_overrides
from tasks.templates.prompts import overriding

Positive = Annotated[int, Field(gt=0)]
SystemPrompt = str | list[str] | dict[str, str | tuple[str, float]] | None


def check_inputs(
    model: str,
    backend: str,
    output_dir: Path,
    n_turns: int = 1,
    only_instruction: bool = False,
    system_prompt: Any = None,
    chat_template: str | None = None,
    versioned: bool = False,
    push_to_hub: str | None = None,
    prompts: Path | None = None,
) -> ChatTemplate:
    """Everything a user can get wrong, checked before any generation; returns the chat template:
    `--chat-template`, the model's tokenizer, or what a server publishes, never a guess. A server
    that takes no raw prompt is refused here (one 1-token call tells)."""
    check_destination(output_dir, versioned, push_to_hub)
    load_overrides(prompts)
    if only_instruction and n_turns > 1:
        raise ValueError("--only-instruction writes one instruction per row; drop it or --n-turns.")
    options(system_prompt)  # a malformed list or mapping fails here
    llm = get_backend(backend, model)
    template = chat_template_for(llm, chat_template)
    pre_query_template(template)  # a template Magpie cannot cut fails here, with the reason
    if hasattr(llm, "check_raw_prompts"):
        llm.check_raw_prompts()
    return template


@flow(
    name="magpie",
    flow_run_name=run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=8),
)
def magpie(
    num_rows: Positive = 16,
    n_turns: Positive = 1,
    only_instruction: bool = False,
    end_with_user: bool = False,
    include_system_prompt: bool = False,
    system_prompt: SystemPrompt = None,
    chat_template: str | None = None,
    model: str = EMBEDDED_MODEL,
    backend: BackendId = "transformers",
    prompts: Path | None = None,
    temperature: Annotated[float, Field(ge=0)] = 1.0,
    response_temperature: Annotated[float, Field(ge=0)] = 0.0,
    max_instruction_tokens: Positive = 128,
    max_new_tokens: Positive = 256,
    batch_size: Positive = 32,
    max_rounds: Positive = 5,
    seed: int = 0,
    output_dir: Path = Path("output/magpie"),
    versioned: bool = False,
    keep_versions: Annotated[int, Field(ge=1)] | None = None,
    push_to_hub: str | None = None,
    private: bool = True,
    license: str = "other",
) -> dict:
    """Generate instructions and conversations with Magpie, from the model's chat template alone.

    Args:
        num_rows: Rows (conversations) to write: rows that fail a filter are dropped with a reason
            and generated again in further rounds until this many pass (see max_rounds).
        n_turns: User/assistant turns per conversation; 1 gives instruction/response rows.
        only_instruction: Write only the instruction, no response (one turn).
        end_with_user: End each conversation with a user turn (no last response).
        include_system_prompt: Keep the system prompt in the rows (and atop each conversation).
        system_prompt: A system prompt; or JSON of a list (drawn uniformly per row) or of a
            mapping name -> prompt or name -> [prompt, weight] (the name goes in
            `system_prompt_key`). Multi-turn runs default to the paper's multi-turn prompt.
        chat_template: A Jinja chat template (text or .jinja file) to use instead of the model's.
        model: Model id: the embedded default, a local model directory, or a Hub id; with
            `openai`, the served name, optionally as `http://host:port/v1#name`.
        backend: `transformers` runs the model locally; `openai` calls an OpenAI-compatible
            server's raw /v1/completions; `fake` is a deterministic stand-in.
        prompts: A directory of .jinja templates that replace the shipped ones of the same name
            (here magpie/multi_turn_system.jinja): try a prompt without editing prompts/.
        temperature: Sampling temperature of the user turns (the paper samples at 1.0).
        response_temperature: Sampling temperature of the responses (0 is greedy, as in the paper).
        max_instruction_tokens: Longest user turn; one that runs longer is dropped.
        max_new_tokens: Longest response, in tokens.
        batch_size: Rows per task run: the unit of caching, retries and resume.
        max_rounds: Most rounds of generation to reach num_rows; the run says how far it got.
        seed: Run seed: fixes sampling and each row's choice of system prompt.
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
    spec = parse_spec(system_prompt)
    template = check_inputs(
        model, backend, output_dir, n_turns, only_instruction, spec, chat_template, versioned, push_to_hub
    )
    overrides = load_overrides(prompts)  # templates that shadow the shipped ones
    logger.info("Chat template %s, from %s", template.name, template.origin)
    ledger, final, opening, attempted = Ledger(), [], {}, 0
    user_params = GenerationParams(
        max_new_tokens=max_instruction_tokens, temperature=temperature, top_p=1.0, seed=seed
    )
    response_params = GenerationParams(
        max_new_tokens=max_new_tokens, temperature=response_temperature, seed=seed
    )
    # Filters drop part of every round, so later rounds ask again for what is missing (scaled by
    # the share kept so far) until `num_rows` rows pass, or `max_rounds` rounds are spent.
    rounds_run = 0
    for round_ in range(1, max_rounds + 1):
        if (short := num_rows - len(final)) <= 0:
            break
        rounds_run = round_
        with overriding(overrides):  # the multi-turn system prompt is a template too
            rows = magpie_rows(next_count(short, attempted, len(final)), spec, seed, n_turns, start=attempted)
        attempted += len(rows)
        for r in rows:
            if r["system_prompt"] not in opening:
                opening[r["system_prompt"]] = query = pre_query_template(template, r["system_prompt"])
                logger.info("Pre-query prompt %r, user turn stops at %s", query.prompt, list(query.stop))

        # 1. Each turn: the model writes the user's message from the pre-query prompt, then answers
        #    it with its normal chat template. Rows whose user turn fails are dropped with a reason.
        generated = map_batches(
            generate_conversations,
            rows,
            batch_size,
            chat_template=template,
            model=model,
            backend=backend,
            params=user_params,
            response_params=response_params,
            n_turns=n_turns,
            only_instruction=only_instruction,
            end_with_user=end_with_user,
            include_system_prompt=include_system_prompt,
        )
        # 2. Drop repeated opening queries (against every row kept so far), keep what is missing.
        kept, duplicates = drop_duplicates([*final, *ledger.rows(generated, "magpie")])
        new, over = take_first(kept[len(final) :], short)
        ledger.drops += duplicates + over
        final += new
        # A round whose rows all repeat earlier ones (a server that ignores the seed and answers the
        # same pre-query prompt the same way) will not be followed by one that does better.
        if not new and generated["rows"] and len(duplicates) >= len(generated["rows"]):
            break

    if len(final) < num_rows:
        logger.warning(shortfall_message(len(final), num_rows, rounds_run, ledger.drops))
    pre_query = [{"prompt": q.prompt, "stop": list(q.stop)} for q in opening.values()]
    return publish(
        "magpie",
        final,
        ledger,
        num_rows,
        output_dir,
        push_to_hub,
        private,
        versioned,
        {
            "pre_query": pre_query,
            "chat_template": {"name": template.name, "source": template.origin},
            "target_rows": num_rows,
            "rounds": rounds_run,
            "attempted": attempted,
        },
        prompt_overrides=overrides,
    )


if __name__ == "__main__":
    from tasks.pipeline.cli import main

    main(magpie, preflight=check_inputs)
