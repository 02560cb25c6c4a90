"""EvolInstruct (Xu et al., 2023, arXiv:2304.12244, WizardLM): evolve instructions into harder ones.

Each round rewrites every instruction with one mutation, five in-depth (add constraints, deepening,
concretizing, increased reasoning steps, complicate input) and one in-breadth, chosen from the run
seed and the row's identity so a rerun makes the same choice. Elimination evolving, as in the
paper, done heuristically: an evolution that is empty, degenerate, copies the rewriting prompt's
words, or adds nothing to its parent is dropped with a reason and the row keeps its parent.
The paper's refusal rule needs a response, so `fall_back_to_parent` applies it after responding.
"""

from __future__ import annotations

import random
import re
from typing import Any

from tasks.backends import GenerationParams, Message, get_backend
from tasks.pipeline.caching import technique_task
from tasks.quality.evol_filters import adds_nothing, answer_text, lost_subject, meta_talk, unfinished
from tasks.quality.filters import degenerate, echoes, empty, first_reason, no_gain, not_a_request, words
from tasks.quality.self_contained import needs_context
from tasks.rows import Row, drop, generation_drop, with_stage
from tasks.templates import prompts

STAGE = "evol_instruct"
IN_DEPTH = ("constraints", "deepening", "concretizing", "reasoning", "complicate_input")
IN_BREADTH = ("breadth",)
MUTATIONS = IN_DEPTH + IN_BREADTH
# The evolving prompts' own words; an evolution that repeats them is an echo (paper rule 4).
MARKERS = (
    "#the given prompt#",
    "#rewritten prompt#",
    "#created prompt#",
    "given prompt",
    "rewritten prompt",
    "created prompt",
    "prompt rewriter",
    "prompt creator",
)
_LEADING_LABEL = re.compile(
    r"^\s*(?:\*\*|#+\s*)?(?:#?\s*(?:the\s+)?(?:rewritten|created|new)\s+prompt\s*#?)\s*(?:\*\*)?"
    r"\s*[:\-]?\s*(?:\*\*)?\s*",
    re.IGNORECASE,
)


def template_for(mutation: str) -> str:
    if mutation not in MUTATIONS:
        raise ValueError(f"Unknown mutation {mutation!r}. Use any of: {', '.join(MUTATIONS)}.")
    return f"evol_instruct/{mutation}.jinja"


def choose_mutation(seed: int, row_id: str, round_: int, mutations: list[str]) -> str:
    """The mutation for this row in this round: random, but fixed by (run seed, row, round)."""
    return random.Random(f"{seed}:{row_id}:{round_}").choice(list(mutations))


def build_messages(instruction: str, mutation: str) -> list[Message]:
    return [{"role": "user", "content": prompts.render(template_for(mutation), instruction=instruction)}]


def parse_evolution(text: str) -> str:
    """The rewritten instruction: a lead-in line ("Here's a rewritten version:"), a leading
    'Rewritten Prompt:' label and wrapping quotes removed."""
    text = text.strip()
    first, _, rest = text.partition("\n")
    if rest.strip() and first.rstrip().endswith(":") and len(first) < 120:
        text = rest.strip()
    text = _LEADING_LABEL.sub("", text, count=1).strip()
    if len(text) >= 2 and text[0] in "\"'“" and text[-1] in "\"'”":
        text = text[1:-1].strip()
    return text


def too_long(candidate: str, parent: str) -> str | None:
    """The evolving prompt allows 10-20 added words; an essay is an answer, not a rewrite."""
    parent_words = len(words(parent))
    return "too_long" if len(words(candidate)) > max(2.5 * parent_words, parent_words + 60) else None


def eliminate(candidate: str, parent: str, mutation: str) -> str | None:
    """Why this evolution fails (None when it is kept)."""
    boilerplate = prompts.render(template_for(mutation), instruction="")
    return first_reason(
        empty(candidate),
        too_long(candidate, parent),
        echoes(candidate, boilerplate, markers=MARKERS),
        meta_talk(candidate),
        degenerate(candidate),
        unfinished(candidate),
        not_a_request(candidate),
        answer_text(candidate),
        needs_context(candidate),
        lost_subject(candidate, parent, mutation),
        no_gain(candidate, parent),
        adds_nothing(candidate, parent, mutation),
    )


def evolve_row(row: Row, text: str, mutation: str, round_: int, params: GenerationParams):
    """(row after this round, drop record or None)."""
    candidate = parse_evolution(text)
    reason = eliminate(candidate, row["instruction"], mutation)
    if reason:
        kept = {**row, "evol_drops": [*row["evol_drops"], f"{round_}:{mutation}:{reason}"]}
        return kept, drop(STAGE, reason, row, text)
    evolved = with_stage(
        row,
        STAGE,
        template_for(mutation),
        params,
        instruction=candidate,
        lineage=[*row["lineage"], candidate],
        mutations=[*row["mutations"], mutation],
        evol_depth=row["evol_depth"] + 1,
    )
    return evolved, None


def templates_used(inputs: dict[str, Any]) -> list[str]:
    """The templates a batch renders: only its rows' chosen mutations, so editing one mutation's
    template recomputes only the batches that use it."""
    chosen = {
        choose_mutation(inputs["seed"], r["id"], inputs["round"], inputs["mutations"]) for r in inputs["rows"]
    }
    return [template_for(m) for m in sorted(chosen)]


@technique_task(STAGE, templates=templates_used)
def evolve_instructions(
    rows: list[Row],
    batch_index: str,
    round: int,
    mutations: list[str],
    seed: int,
    model: str,
    backend: str,
    params: GenerationParams,
    prompt_overrides: dict[str, str] | None = None,
) -> dict:
    """One evolution round over a batch; every row comes back, evolved or with its parent kept."""
    chosen = [choose_mutation(seed, row["id"], round, mutations) for row in rows]
    llm = get_backend(backend, model)
    outputs = llm.generate([build_messages(r["instruction"], m) for r, m in zip(rows, chosen)], params)
    out_rows: list[Row] = []
    drops: list[dict[str, Any]] = []
    for row, mutation, out in zip(rows, chosen, outputs):
        if failed := generation_drop(STAGE, out, row):
            new_row, record = row, failed
        elif out.finish_reason == "length":  # cut off mid-rewrite: incomplete by construction
            new_row = {**row, "evol_drops": [*row["evol_drops"], f"{round}:{mutation}:truncated"]}
            record = drop(STAGE, "truncated", row, out.text)
        else:
            new_row, record = evolve_row(row, out.text, mutation, round, params)
        out_rows.append(new_row)
        drops += [record] if record else []
    return {"rows": out_rows, "drops": drops}


def fall_back_to_parent(rows: list[Row], respond_drops: list[dict]) -> tuple[list[Row], list[dict]]:
    """The paper's second rule: an evolution whose response is a short refusal is dropped and the
    row falls back to its parent instruction, to be answered again. Returns (rows to answer again,
    the response drops with each fallen-back row's refusal recorded as a failed evolution)."""
    refused = {d["row_id"] for d in respond_drops if d["reason"] == "refusal"}
    fallbacks = [row for row in rows if row["id"] in refused and row["evol_depth"] > 0]
    moved = {row["id"] for row in fallbacks}
    drops = [d for d in respond_drops if d["row_id"] not in moved]
    drops += [drop(STAGE, "refusal", row, row["instruction"]) for row in fallbacks]
    return [_parent(row) for row in fallbacks], drops


def _parent(row: Row) -> Row:
    mutation = row["mutations"][-1]
    return {
        **row,
        "instruction": row["lineage"][-2],
        "lineage": row["lineage"][:-1],
        "mutations": row["mutations"][:-1],
        "evol_depth": row["evol_depth"] - 1,
        "evol_drops": [*row["evol_drops"], f"{row['evol_depth']}:{mutation}:refusal"],
        "techniques": row["techniques"][:-1],
        "templates": row["templates"][:-1],
    }
