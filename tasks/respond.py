"""Response generation: an answer for every instruction (the last step of SelfInstruct, EvolInstruct
and Magpie alike). A response that is empty, degenerate or a short refusal is dropped with a reason;
one cut off by the token limit is kept and flagged `response_truncated`."""

from __future__ import annotations

from typing import Any

from tasks import prompts
from tasks.backends import Generation, GenerationParams, Message, get_backend
from tasks.caching import technique_task
from tasks.filters import degenerate, empty, first_reason, refusal
from tasks.rows import Row, drop, generation_drop, with_stage

STAGE = "respond"
TEMPLATE = "respond.jinja"


def build_messages(row: Row, template: str = TEMPLATE, system_prompt: str | None = None) -> list[Message]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": prompts.render(template, **row)}]


def check_response(gen: Generation) -> str | None:
    return first_reason(empty(gen.text), degenerate(gen.text), refusal(gen.text))


@technique_task(STAGE, templates=lambda inputs: [inputs["template"]])
def generate_responses(
    rows: list[Row],
    batch_index: str,
    model: str,
    backend: str,
    params: GenerationParams,
    template: str = TEMPLATE,
    system_prompt: str | None = None,
) -> dict:
    """A `response` for every row; rows without a usable one are returned as drop records."""
    llm = get_backend(backend, model)
    outputs = llm.generate([build_messages(r, template, system_prompt) for r in rows], params)
    out_rows: list[Row] = []
    drops: list[dict[str, Any]] = []
    for row, out in zip(rows, outputs):
        failed = generation_drop(STAGE, out, row)
        reason = None if failed else check_response(out)
        if failed or reason:
            drops.append(failed or drop(STAGE, reason, row, out.text))
            continue
        truncated = out.finish_reason == "length"
        out_rows.append(
            with_stage(
                row,
                STAGE,
                template,
                params,
                response=out.text,
                response_truncated=truncated,
                system_prompt=system_prompt,
            )
        )
    return {"rows": out_rows, "drops": drops}
