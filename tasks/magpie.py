"""Magpie (Xu et al., 2024, arXiv:2406.08464): instructions and conversations synthesized from
nothing but an aligned chat model's own chat template.

Given its template up to the point where a user's text would begin (the *pre-query* prompt), an
aligned model writes a user query; answered with the normal chat template, that is one row. The
pre-query prompt is derived from the model's chat template, not from a hand-written table:
`pre_query_template` renders a conversation whose last user message is a marker and cuts at the
marker, so whatever the template does around a user message (BOS once, default system prompts,
system prompts folded into the user turn, headers) is exactly what the model sees. The user turn
stops at what the template writes after a user message (`<|im_end|>`, `<|eot_id|>`, `[/INST]`...).
`generate_conversations` runs a batch of rows turn by turn: each user turn and each assistant turn
of the batch is one batched model call. A user turn that comes back empty, unfinished, too short,
degenerate, echoing the template or in the assistant's voice drops its row with a reason, as does an
answer that is empty, degenerate, a refusal or no answer at all; no row is emitted half-filled.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from typing import Any

from tasks.backends import Backend, Generation, GenerationParams, Message, get_backend
from tasks.pipeline import usage
from tasks.pipeline.caching import technique_task
from tasks.quality.filters import (
    assistant_voice,
    degenerate,
    echoes,
    empty,
    first_reason,
    non_answer,
    refusal,
    words,
)
from tasks.quality.self_contained import needs_context
from tasks.rows import Row, drop, generation_drop, stable_id, with_stage
from tasks.templates import chat_templates
from tasks.templates.chat_templates import (
    MARKER,
    ChatTemplate,
    fit_system,
    leading_token,
    resolve,
    split_at_marker,
    template_system_prompt,
)

REPLY_MARKER = "MagpieReplyText9b2e"
STAGE = "magpie"
RESPONSE_STAGE = "magpie_response"
ROLE_NAMES = ("user", "assistant", "system", "model")
# The shared cache policy keys this module's source; the derivation's other half lives in
# tasks/templates/chat_templates.py, so its source is a keyed input too: editing it re-runs batches.
CHAT_TEMPLATES_CODE = hashlib.sha256(inspect.getsource(chat_templates).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PreQuery:
    """What Magpie sends for the next user turn, and where that turn ends.

    `prompt` is sent as a raw string; `stop` holds the end-of-turn token or string the template
    writes after a user message, then the EOS token. `system_merged` is True when the template
    takes no system role, so the system prompt opens the first user message instead.
    `template_system_prompt` is the system prompt the template writes by itself when none is given
    (SmolLM2, Qwen2.5), which the model then sees in every conversation without one."""

    prompt: str
    stop: tuple[str, ...]
    system_merged: bool = False
    template_system_prompt: str | None = None


def pre_query_template(
    tokenizer_or_model_id: Any,
    system_prompt: str | None = None,
    history: list[Message] | None = None,
    chat_template: str | None = None,
) -> PreQuery:
    """The pre-query prompt and stop strings for the next user turn.

    Args:
        tokenizer_or_model_id: A Hugging Face tokenizer, a model id (only its tokenizer is
            loaded), or a ChatTemplate.
        system_prompt: The conversation's system prompt, if any.
        history: Earlier turns (user, assistant, user, assistant...), without the system prompt.
        chat_template: A Jinja chat template (text or file) to use instead of the model's own.
    """
    template = resolve(tokenizer_or_model_id, chat_template)
    messages = [*check_history(history or []), {"role": "user", "content": MARKER}]
    prompt, _, merged = split_at_marker(template, messages, system_prompt)
    return PreQuery(
        prompt=prompt,
        stop=end_of_turn(template, messages, system_prompt),
        system_merged=merged,
        template_system_prompt=template_system_prompt(template),
    )


def check_history(history: list[Message]) -> list[Message]:
    roles = [m.get("role") for m in history]
    if roles != ["user", "assistant"] * (len(roles) // 2) or len(roles) % 2:
        raise ValueError(
            f"history must alternate user/assistant messages and end with an assistant reply "
            f"(the system prompt goes in system_prompt); got roles {roles}."
        )
    return list(history)


def end_of_turn(
    template: ChatTemplate, messages: list[Message], system_prompt: str | None
) -> tuple[str, ...]:
    """Stop strings for a user turn: the first control token (else the first line) of what the
    template writes between a user message and the assistant's reply, then the EOS token."""
    reply = {"role": "assistant", "content": REPLY_MARKER}
    try:
        between = split_at_marker(template, [*messages, reply], system_prompt)[1].split(REPLY_MARKER)[0]
    except ValueError:  # a template that will not render a reply after this turn
        between = split_at_marker(template, messages, system_prompt)[1]
    stops = [leading_token(between, template.control_tokens), template.eos_token]
    found = tuple(dict.fromkeys(s for s in stops if s))
    if not found:
        raise ValueError("Cannot tell where a user turn ends in this chat template (and it has no EOS).")
    return found


def reply_prompt(template: ChatTemplate, system_prompt: str | None, conversation: list[Message]) -> str:
    """The assistant's turn, rendered with the normal chat template and its generation prompt."""
    fitted, _ = fit_system(template, conversation, system_prompt)
    return template.render(fitted, add_generation_prompt=True)


def check_user_turn(gen: Generation, system_prompt: str | None, template: ChatTemplate) -> str | None:
    """Why a generated user turn is unusable (None when it is fine)."""
    if gen.finish_reason == "prompt_too_long":
        return "prompt_too_long"
    text = gen.text.strip()
    head = text.split("\n", 1)[0].strip().rstrip(":").lower()
    return first_reason(
        empty(text),
        "echo_of_template" if head in ROLE_NAMES else None,  # a role header written as text
        echoes(text, system_prompt or template_system_prompt(template) or "", template.control_tokens),
        degenerate(text),
        assistant_voice(text),  # the model wrote the assistant's side
        "no_end_of_turn" if gen.finish_reason == "length" else None,  # ran on past the query
        "too_short" if len(words(text)) < 3 else None,
    )


def call_params(
    params: GenerationParams, rows: list[Row], role: str, turn: int, **update
) -> GenerationParams:
    """`params` with a seed drawn from the batch's rows: batches repeat the very same pre-query
    prompt, and one seed for all of them would sample the same query in every batch."""
    seed = int(stable_id(str(params.seed), role, str(turn), *[r["id"] for r in rows]), 16) % 2**31
    return params.model_copy(update={"seed": seed, **update})


def ask_users(llm: Backend, template, rows, conversations, params, turn) -> tuple[list, list, tuple]:
    """One user turn for every row (one model call): (kept rows, drops, the stop strings sent)."""
    queries = [pre_query_template(template, r["system_prompt"], conversations[r["id"]]) for r in rows]
    stop = tuple(sorted({s for q in queries for s in q.stop}))
    outputs = llm.generate([q.prompt for q in queries], call_params(params, rows, "user", turn, stop=stop))
    kept, drops = [], []
    for row, out in zip(rows, outputs):
        reason = check_user_turn(out, row["system_prompt"], template)
        if not reason and turn == 1:  # later turns may point back at the conversation
            reason = needs_context(out.text)
        if reason:
            drops.append(drop(STAGE, reason, row, out.text))
        else:
            conversations[row["id"]].append({"role": "user", "content": out.text.strip()})
            kept.append(row)
    return kept, drops, stop


def answer_users(llm: Backend, template, rows, conversations, params, turn, truncated):
    """One assistant turn for every row, with the normal chat template (one model call)."""
    prompts = [reply_prompt(template, r["system_prompt"], conversations[r["id"]]) for r in rows]
    with usage.stage(RESPONSE_STAGE):
        outputs = llm.generate(prompts, call_params(params, rows, "assistant", turn))
    kept, drops = [], []
    for row, out in zip(rows, outputs):
        failed = generation_drop(RESPONSE_STAGE, out, row)
        asked = conversations[row["id"]][-1]["content"]
        checks = (empty(out.text), degenerate(out.text), refusal(out.text), non_answer(out.text, asked))
        if failed or (reason := first_reason(*checks)):
            drops.append(failed or drop(RESPONSE_STAGE, reason, row, out.text))
            continue
        conversations[row["id"]].append({"role": "assistant", "content": out.text.strip()})
        truncated[row["id"]] = truncated.get(row["id"], False) or out.finish_reason == "length"
        kept.append(row)
    return kept, drops


def conversation_fields(row: Row, conversation: list[Message], single: bool, include_system: bool) -> Row:
    """`instruction` (+ `response`) for one turn, else `conversation`; `system_prompt` if kept."""
    system = row["system_prompt"] if include_system else None
    if not single:
        head = [{"role": "system", "content": system}] if system else []
        return {"conversation": head + conversation, "system_prompt": system}
    fields = {"instruction": conversation[0]["content"], "system_prompt": system}
    return {**fields, "response": conversation[1]["content"]} if len(conversation) > 1 else fields


@technique_task(STAGE, templates=lambda inputs: [])
def generate_conversations(
    rows: list[Row],
    batch_index: int,
    chat_template: ChatTemplate,
    model: str,
    backend: str,
    params: GenerationParams,
    response_params: GenerationParams,
    n_turns: int = 1,
    only_instruction: bool = False,
    end_with_user: bool = False,
    include_system_prompt: bool = False,
    template_code: str = CHAT_TEMPLATES_CODE,
) -> dict:
    """Magpie conversations for a batch of rows (each with its `system_prompt`); {"rows", "drops"}."""
    llm = get_backend(backend, model)
    turns = 1 if only_instruction else n_turns
    conversations: dict[str, list[Message]] = {r["id"]: [] for r in rows}
    truncated: dict[str, bool] = {}
    live, drops, stops = list(rows), [], set()
    for turn in range(1, turns + 1):
        live, lost, stop = ask_users(llm, chat_template, live, conversations, params, turn)
        drops, stops = drops + lost, stops | set(stop)
        if only_instruction or (end_with_user and turn == turns):
            break
        live, lost = answer_users(llm, chat_template, live, conversations, response_params, turn, truncated)
        drops += lost
    # Provenance: which chat template cut the pre-query prompts, and where it was found.
    base = {
        "model": model,
        "backend": backend,
        "chat_template": chat_template.name,
        "chat_template_source": chat_template.origin,
    }
    params = params.model_copy(update={"stop": tuple(sorted(stops))})  # provenance: the derived stops
    out = []
    for row in live:
        fields = conversation_fields(row, conversations[row["id"]], turns == 1, include_system_prompt)
        new = with_stage({**base, **row}, STAGE, chat_template.name, params, **fields)
        if row["id"] in truncated:  # the row has assistant turns
            flag = {"response_truncated": truncated[row["id"]]}
            new = with_stage(new, RESPONSE_STAGE, chat_template.name, response_params, **flag)
        out.append(new)
    return {"rows": out, "drops": drops}
