"""Response generation: an answer for every instruction (the last step of SelfInstruct, EvolInstruct
and Magpie alike). It is basic prompting (`tasks/generate.py`) with `respond.jinja` writing the
`response` column: a response that is empty, degenerate or a short refusal is sampled again with the
next seed, then dropped with a reason; one cut off by the token limit is kept and flagged
`response_truncated`; the system prompt it was answered under is the row's `system_prompt`.

Grounding: a row written from a seed passage can be answered with that passage in the prompt as
reference material (`respond_grounded.jinja`), so facts in the answer come from the passage instead
of the model's memory; the row's `instruction` stays the self-contained question, and `grounded`
records whether its answer saw the passage. A grounded answer that talks about the material it was
given ("According to the reference text...") is drawn again, since the row keeps no passage, and so
is one that states a figure its passage and question never do ("the 1924 London Olympics" about a
passage on the 1908 Games): `unsupported_figure`.
"""

from __future__ import annotations

from tasks import generate
from tasks.backends import GenerationParams
from tasks.pipeline.caching import technique_task
from tasks.rows import Row

STAGE = "respond"
TEMPLATE = "respond.jinja"
GROUNDED_TEMPLATE = "respond_grounded.jinja"
# An answer must also say something: not its question again, not only an offer of help.
CHECKS = (*generate.DEFAULT_CHECKS, "non_answer")
# A grounded answer must not talk about the material it was given (the row keeps no passage), nor
# state a year or figure its passage and question never do (tasks/quality/figures.py).
GROUNDED_CHECKS = ("mentions_prompt", "unsupported_figure")


def response_template(grounded: bool, template: str = TEMPLATE) -> str:
    return GROUNDED_TEMPLATE if grounded else template


@technique_task(
    STAGE,
    templates=lambda inputs: [response_template(inputs.get("grounded", False), inputs["template"])],
    uses=[generate],
)
def generate_responses(
    rows: list[Row],
    batch_index: str,
    model: str,
    backend: str,
    params: GenerationParams,
    template: str = TEMPLATE,
    system_prompt: str | None = None,
    grounded: bool = False,
    prompt_overrides: dict[str, str] | None = None,
) -> dict:
    """A `response` for every row; rows without a usable one are returned as drop records.
    `grounded` answers each row with its `context` passage as reference material."""
    if grounded and (missing := [r.get("id") for r in rows if not r.get("context")]):
        raise ValueError(f"grounded responses need each row's `context`; rows {missing[:3]} have none.")
    result = generate.generate_text.fn(
        rows,
        batch_index,
        template=response_template(grounded, template),
        output_column="response",
        model=model,
        backend=backend,
        params=params,
        system_prompt=system_prompt,
        stage=STAGE,
        checks=CHECKS + GROUNDED_CHECKS if grounded else CHECKS,
        prompt_overrides=prompt_overrides,
    )
    return {**result, "rows": [{**row, "grounded": grounded} for row in result["rows"]]}
