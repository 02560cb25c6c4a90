"""Magpie: instructions and conversations from an aligned chat model, prompted with nothing but the
start of a user turn (Xu et al., 2024, arXiv:2406.08464).

Run `python flows/magpie.py --help` for the parameters (the flow's own, in kebab-case).
"""

from pathlib import Path

from tasks.data.publish import publish
from tasks.magpie import generate_conversations, pre_query_template
from tasks.magpie_rows import magpie_rows, options, parse_spec
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
from tasks.pipeline.targets import next_count, shortfall_message, take_first
from tasks.rows import drop_duplicates
from tasks.templates.chat_templates import ChatTemplate, chat_template_for
from tasks.templates.prompt_overrides import load_overrides
from tasks.templates.prompts import overriding

SystemPrompt = str | list[str] | dict[str, str | tuple[str, float]] | None


def check_inputs(
    llm: Model,
    output: Output,
    n_turns: int = 1,
    only_instruction: bool = False,
    system_prompt: SystemPrompt = None,
    chat_template: str | None = None,
    **_: object,
) -> ChatTemplate:
    """Everything a user can get wrong, checked before any generation; returns the chat template:
    `--chat-template`, the model's tokenizer, or what a server publishes, never a guess. A server
    that takes no raw prompt is refused here (one 1-token call tells)."""
    output.check()
    if only_instruction and n_turns > 1:
        raise ValueError("--only-instruction writes one instruction per row; drop it or --n-turns.")
    options(parse_spec(system_prompt))  # a malformed list or mapping fails here
    backend = llm.load()  # once per process; a bad model id or template fails here
    template = chat_template_for(backend, chat_template)
    pre_query_template(template)  # a template Magpie cannot cut fails here, with the reason
    if hasattr(backend, "check_raw_prompts"):
        backend.check_raw_prompts()
    return template


@grouped_flow("magpie")
def magpie(
    num_rows: Positive = 16,
    n_turns: Positive = 1,
    only_instruction: bool = False,
    end_with_user: bool = False,
    include_system_prompt: bool = False,
    system_prompt: SystemPrompt = None,
    chat_template: str | None = None,
    max_instruction_tokens: Positive = 128,
    max_rounds: Positive = 5,
    llm: Model = Model(),
    sampling: Sampling = Sampling(temperature=1.0, response_temperature=0.0),
    batching: Batching = Batching(),
    output: Output = Output(output_dir=Path("output/magpie")),
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
        max_instruction_tokens: Longest user turn; one that runs longer is dropped.
        max_rounds: Most rounds of generation to reach num_rows; the run says how far it got.
        llm: The model that writes, its backend (with `openai`, a server's raw /v1/completions) and
            prompt templates (here magpie/multi_turn_system.jinja).
        sampling: Temperatures (the paper samples user turns at 1.0 and answers greedily), response
            length and the run seed (it fixes each row's choice of system prompt too).
        batching: Rows per task run.
        output: Where the dataset is written and pushed.
    """
    logger = get_run_logger()
    template = inputs(check_inputs)
    spec = parse_spec(system_prompt)
    overrides = load_overrides(llm.prompts)  # templates that shadow the shipped ones
    logger.info("Chat template %s, from %s", template.name, template.origin)
    ledger, final, opening, attempted = Ledger(), [], {}, 0
    user_params = sampling.instructions(max_instruction_tokens, top_p=1.0)
    # Filters drop part of every round, so later rounds ask again for what is missing (scaled by
    # the share kept so far) until `num_rows` rows pass, or `max_rounds` rounds are spent.
    rounds_run = 0
    for round_ in range(1, max_rounds + 1):
        if (short := num_rows - len(final)) <= 0:
            break
        rounds_run = round_
        with overriding(overrides):  # the multi-turn system prompt is a template too
            count = next_count(short, attempted, len(final))
            rows = magpie_rows(count, spec, sampling.seed, n_turns, start=attempted)
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
            batching.batch_size,
            chat_template=template,
            params=user_params,
            response_params=sampling.responses(),
            n_turns=n_turns,
            only_instruction=only_instruction,
            end_with_user=end_with_user,
            include_system_prompt=include_system_prompt,
            **llm.ids(),
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
    extra = {
        "pre_query": pre_query,
        "chat_template": {"name": template.name, "source": template.origin},
        "target_rows": num_rows,
        "rounds": rounds_run,
        "attempted": attempted,
    }
    return publish("magpie", final, ledger, num_rows, output, extra, overrides)


if __name__ == "__main__":
    from tasks.pipeline.cli import main

    main(magpie, preflight=check_inputs)
