"""Self-Instruct's bootstrap (Wang et al., 2022, arXiv:2212.10560, section 2): grow a pool of
instructions from a few seed tasks, one round at a time.

Each prompt of a round shows 8 instructions in the paper's numbered format (6 seed tasks and 2
instructions generated in earlier rounds, fewer when there are none yet) and ends at the next
number, so the model continues the list. `parse_tasks` splits the continuation into candidates;
`check_candidate` applies the paper's filters (length, keywords a text model cannot serve, a
leading punctuation mark or non-English text, plus `degenerate` for small models); a candidate
then joins the pool only if its ROUGE-L with every pool instruction is below the threshold.
`bootstrap_instructions` is one round: a cached task keyed on the pool so far and the round.
"""

from __future__ import annotations

import random
import re
from typing import Any

from tasks.backends import GenerationParams, get_backend
from tasks.pipeline.caching import technique_task
from tasks.quality.filters import (
    degenerate,
    echoes,
    empty,
    first_reason,
    length_out_of_range,
    non_english,
    starts_with_punctuation,
    unsupported_keyword,
)
from tasks.quality.near_duplicates import Index, near_duplicate_index
from tasks.quality.self_contained import needs_context
from tasks.rows import Row, drop, stable_id, with_stage
from tasks.templates import prompts

STAGE = "self_instruct_bootstrap"
TEMPLATE = "self_instruct/bootstrap.jinja"
# The template's own words: a continuation that starts the prompt over has left the list.
PROMPT_MARKERS = ("come up with a series of tasks",)
# "Task 10:", "10.", "10)" at a line start, or "Task 10:" inline; the number is the model's, not ours.
_TASK_MARKER = re.compile(
    r"(?:^|\n)[ \t]*(?:task\s*)?\d{1,3}\s*[:.)][ \t]*|[ \t]+task\s*\d{1,3}\s*:\s*", re.I
)
_LIST_END = re.compile(r"\n[ \t]*\n")


def sample_examples(
    seed_tasks: list[Row],
    generated: list[Row],
    seed: int,
    round_: int,
    prompt_index: int,
    k: int = 8,
    k_generated: int = 2,
) -> list[Row]:
    """The in-context examples of one prompt: `k_generated` earlier generations (as many as exist)
    topped up to `k` with seed tasks, shuffled; fixed by (run seed, round, prompt)."""
    rng = random.Random(f"{seed}:{round_}:{prompt_index}")
    chosen = rng.sample(generated, min(k_generated, len(generated)))
    chosen += rng.sample(seed_tasks, min(k - len(chosen), len(seed_tasks)))
    rng.shuffle(chosen)
    return chosen


def build_prompt(examples: list[Row]) -> str:
    """A raw completion prompt, as the paper sends a vanilla LM: the list, then "Task 9:"."""
    instructions = [" ".join(e["instruction"].split()).rstrip(":") for e in examples]
    return prompts.render(TEMPLATE, instructions=instructions)


def parse_tasks(text: str, truncated: bool = False) -> tuple[list[str], list[tuple[str, str]]]:
    """(candidate instructions, [(text, reason)] for what is not one). The list ends at a blank
    line or where the model starts the prompt over; an item cut off by the token limit is
    `truncated`. Numbering is stripped and an item's lines are joined, as the paper does."""
    dropped: list[tuple[str, str]] = []
    marker = min((i for m in PROMPT_MARKERS if (i := text.lower().find(m)) >= 0), default=-1)
    if marker >= 0:
        text, rest = text[:marker], text[marker:]
        dropped.append((rest.strip(), "echo_of_prompt"))
    if end := _LIST_END.search(text.strip("\n")):
        text, rest = text.strip("\n")[: end.start()], text.strip("\n")[end.end() :]
        dropped.append((rest.strip(), "after_list"))
    items = [" ".join(item.split()) for item in _TASK_MARKER.split(text)]
    items = [item for item in items if item]
    if truncated and not dropped and items:
        dropped.append((items.pop(), "truncated"))
    return items, [(t, reason) for t, reason in dropped if t]


_RESIDUE = re.compile(
    r"\b(?:these|those|the above|such)\s+(?:tasks|examples|instructions)\b|"
    r"\bthe (?:text-based )?ai assistant\b|\bas an? (?:text-based )?ai\b",
    re.IGNORECASE,
)


def prompt_residue(instruction: str) -> str | None:
    """`prompt_residue` when a task carries talk about the prompt itself ("The AI assistant can
    answer these tasks...", "...examples of how a text-based AI assistant..."): four words in a
    row from the template, or a mention of the tasks, examples or assistant it lists."""
    boilerplate = prompts.render(TEMPLATE, instructions=[])
    if echoes(instruction, boilerplate, n=4) or _RESIDUE.search(instruction):
        return "prompt_residue"
    return None


def check_candidate(instruction: str) -> str | None:
    """The paper's filters, in its order, as a named reason (None: the instruction may be kept),
    then the checks small models need: degenerate text, the prompt's own words, and a task that
    points at something it does not give ("the list")."""
    return first_reason(
        empty(instruction),
        length_out_of_range(instruction),
        unsupported_keyword(instruction),
        starts_with_punctuation(instruction),
        non_english(instruction),
        degenerate(instruction),
        prompt_residue(instruction),
        needs_context(instruction),  # "Compare the top three books in the list."
    )


def _drop(reason: str, round_: int, text: str, **extra: Any) -> dict[str, Any]:
    return {**drop(STAGE, reason, {}, text), "round": round_, **extra}


def admit(
    candidates: list[str], pool: Index, threshold: float, round_: int
) -> tuple[list[str], list[dict[str, Any]]]:
    """The candidates that pass `check_candidate` and are not similar to the pool (which each
    kept one joins at once, so a round cannot keep two near-copies); drops name the reason."""
    kept, drops = [], []
    for candidate in candidates:
        if reason := check_candidate(candidate):
            drops.append(_drop(reason, round_, candidate))
        elif match := pool.find(candidate, threshold):
            drops.append(
                _drop("similar_to_pool", round_, candidate, similar_to=match[0], score=round(match[1], 4))
            )
        else:
            pool.add(candidate)
            kept.append(candidate)
    return kept, drops


@technique_task(STAGE, templates=lambda inputs: [TEMPLATE])
def bootstrap_instructions(
    generated: list[Row],
    batch_index: int,
    round: int,
    seed_tasks: list[Row],
    prompts_per_round: int,
    num_seed_examples: int,
    num_generated_examples: int,
    similarity_threshold: float,
    seed: int,
    model: str,
    backend: str,
    params: GenerationParams,
    prompt_overrides: dict[str, str] | None = None,
) -> dict:
    """One bootstrap round: `prompts_per_round` prompts sampled from the pool (`seed_tasks` plus
    the instructions `generated` so far), their continuations parsed and filtered. Returns
    {"rows": the new instructions, "drops": every candidate left out, with its reason}."""
    k = num_seed_examples + num_generated_examples
    samples = [
        sample_examples(seed_tasks, generated, seed, round, i, k, num_generated_examples)
        for i in range(prompts_per_round)
    ]
    round_params = params.model_copy(update={"seed": params.seed + round})
    outputs = get_backend(backend, model).generate([build_prompt(s) for s in samples], round_params)
    pool = near_duplicate_index([r["instruction"] for r in [*seed_tasks, *generated]], similarity_threshold)
    base = {"model": model, "backend": backend}
    rows, drops = [], []
    for examples, out in zip(samples, outputs):
        if out.finish_reason == "prompt_too_long":
            drops.append(_drop("prompt_too_long", round, ""))
            continue
        candidates, unparsed = parse_tasks(out.text, truncated=out.finish_reason == "length")
        drops += [_drop(reason, round, text) for text, reason in unparsed]
        kept, rejected = admit(candidates, pool, similarity_threshold, round)
        drops += rejected
        in_context = [e.get("id") or e["seed_id"] for e in examples]
        rows += [
            with_stage(
                base,
                STAGE,
                TEMPLATE,
                round_params,
                id=stable_id(STAGE, text),
                instruction=text,
                round=round,
                in_context=in_context,
            )
            for text in kept
        ]
    return {"rows": rows, "drops": drops}
