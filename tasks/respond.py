"""Response generation: an answer for every instruction (the last step of SelfInstruct, EvolInstruct
and Magpie alike). It is basic prompting (`tasks/generate.py`) with `respond.jinja` writing the
`response` column: a response that is empty, degenerate or a short refusal is dropped with a reason;
one cut off by the token limit is kept and flagged `response_truncated`; the system prompt it was
answered under is the row's `system_prompt`."""

from __future__ import annotations

from tasks import generate
from tasks.backends import GenerationParams
from tasks.caching import technique_task
from tasks.rows import Row

STAGE = "respond"
TEMPLATE = "respond.jinja"


@technique_task(STAGE, templates=lambda inputs: [inputs["template"]], uses=[generate])
def generate_responses(
    rows: list[Row],
    batch_index: str,
    model: str,
    backend: str,
    params: GenerationParams,
    template: str = TEMPLATE,
    system_prompt: str | None = None,
    prompt_overrides: dict[str, str] | None = None,
) -> dict:
    """A `response` for every row; rows without a usable one are returned as drop records."""
    return generate.generate_text.fn(
        rows,
        batch_index,
        template=template,
        output_column="response",
        model=model,
        backend=backend,
        params=params,
        system_prompt=system_prompt,
        stage=STAGE,
        prompt_overrides=prompt_overrides,
    )
