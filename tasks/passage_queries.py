"""SelfInstruct (Wang et al., 2022, arXiv:2212.10560): new user queries grounded in a seed context.

`build_messages` renders the prompt for one seed, `parse_instructions` turns the model's text into
clean queries (numbering and bullets stripped, headers, echoes, requests for more queries,
degenerate and duplicate lines dropped with a reason, the count capped). A query that needs the
passage to be understood ("How does it work?", "What is the purpose of the vaccine?") is dropped
as `needs_context`, not rewritten: the row keeps the instruction without its passage, and a
rewrite by the same small model would guess at the subject; the seed is sampled again instead.
`generate_instructions` joins them over a batch.
"""

from __future__ import annotations

import re
from typing import Any

from tasks.backends import GenerationParams, Message, get_backend
from tasks.pipeline.caching import technique_task
from tasks.quality.filters import degenerate, echoes, empty, first_reason, normalize, not_a_request, words
from tasks.quality.self_contained import needs_context
from tasks.rows import Row, drop, generation_drop, stable_id, with_stage
from tasks.templates import prompts

TEMPLATE = "self_instruct.jinja"
STAGE = "self_instruct"
ATTEMPTS = 3  # samples of a seed short of its count, each with the next seed value

# "1.", "2)", "(3)", "-", "*", "•", "Q1:", "Query 2 -", "Request:"... repeated ("1. - foo").
_LIST_MARKER = re.compile(
    r"^\s*(?:[-*•·+>]+|\(?\d{1,3}\s*[.):\]]|\(?[a-z][.)](?=\s)|"
    r"(?:query|question|request|task|q)\s*\d*\s*[:.)\-])\s*",
    re.IGNORECASE,
)
_INLINE_ITEM = re.compile(r"(?<=[?.!])\s+(?=\d{1,2}[.)]\s)")
# A query that asks for queries ("Can you provide a prompt that asks about Git?", "Write three
# questions about the tides"): the model restating its own task, not a user's request.
_META_REQUEST = re.compile(
    r"\bprompts?\s+(?:(?:that|which)\s+asks?|asking)\b|"
    r"\b(?:write|generate|create|provide|give|suggest|come up with|list)\s+(?:me\s+)?"
    r"(?:\d+|two|three|four|five|six|seven|eight|nine|ten)\s+"
    r"(?:\w+\s+)?(?:prompts|questions|queries)\s+(?:about|on)\b",
    re.IGNORECASE,
)


def build_messages(seed: Row, num_instructions: int) -> list[Message]:
    content = prompts.render(TEMPLATE, context=seed["context"], num_instructions=num_instructions)
    return [{"role": "user", "content": content}]


def clean_line(line: str) -> str:
    """One query line without list markers, markdown emphasis or wrapping quotes."""
    line = line.strip()
    while (stripped := _LIST_MARKER.sub("", line, count=1)) != line:
        line = stripped.strip()
    line = line.replace("**", "").replace("__", "").strip()
    if len(line) >= 2 and line[0] in "\"'“" and line[-1] in "\"'”":
        line = line[1:-1].strip()
    return line


def split_lines(text: str) -> list[str]:
    """Lines of the output, with inline lists ("1. What...? 2. Why...?") split into items."""
    lines = []
    for line in text.splitlines():
        lines += _INLINE_ITEM.split(line) if len(_INLINE_ITEM.findall(line)) >= 1 else [line]
    return lines


def _unusable(line: str, context: str) -> str | None:
    if line.endswith(":") or line.lower().startswith(("here are", "here is", "here's", "sure")):
        return "not_a_request"
    if re.match(r"(?:why|what|how|when|where|who|which)\s*:", line, re.IGNORECASE):  # "Why: 1. Bread baking."
        return "not_a_request"
    if len(words(line)) < 3:
        return "too_short"
    if len(words(line)) >= 8 and normalize(line) in normalize(context):
        return "copied_context"
    if _META_REQUEST.search(line):
        return "meta_request"
    return not_a_request(line) or needs_context(line)


def parse_instructions(
    text: str, num_instructions: int, context: str, boilerplate: str = ""
) -> tuple[list[str], list[tuple[str, str]]]:
    """(kept queries, [(line, reason)] for every non-blank line dropped)."""
    kept: list[str] = []
    dropped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw in split_lines(text):
        line = clean_line(raw)
        if not line:
            if raw.strip():
                dropped.append((raw.strip(), "empty"))
            continue
        reason = first_reason(
            empty(line),
            _unusable(line, context),
            echoes(line, boilerplate),
            degenerate(line),
        )
        if reason is None and normalize(line) in seen:
            reason = "duplicate"
        if reason is None and len(kept) >= num_instructions:
            reason = "over_cap"
        if reason:
            dropped.append((line, reason))
        else:
            kept.append(line)
            seen.add(normalize(line))
    return kept, dropped


def instruction_rows(
    seed: Row, text: str, num_instructions: int, base: Row, params: GenerationParams
) -> tuple[list[Row], list[dict[str, Any]]]:
    boilerplate = prompts.render(TEMPLATE, context="", num_instructions=num_instructions)
    kept, dropped = parse_instructions(text, num_instructions, seed["context"], boilerplate)
    rows = [
        with_stage(
            base,
            STAGE,
            TEMPLATE,
            params,
            id=stable_id(seed["seed_id"], query),
            seed_id=seed["seed_id"],
            context=seed["context"],
            instruction=query,
            lineage=[query],
            mutations=[],
            evol_depth=0,
            evol_drops=[],
        )
        for query in kept
    ]
    drops = [drop(STAGE, reason, seed, line) for line, reason in dropped]
    if not kept and not dropped:
        drops.append(drop(STAGE, "empty", seed, text))
    return rows, drops


@technique_task(STAGE, templates=lambda inputs: [TEMPLATE])
def generate_instructions(
    seeds: list[Row],
    batch_index: str,
    num_instructions: int,
    model: str,
    backend: str,
    params: GenerationParams,
    max_attempts: int = ATTEMPTS,
    prompt_overrides: dict[str, str] | None = None,
) -> dict:
    """Up to `num_instructions` queries per seed context; returns {"rows", "drops"}.

    Small models often write fewer queries than asked: a seed short of its count is sampled again
    (with the next seed value, so reruns repeat it) up to `max_attempts` times."""
    llm = get_backend(backend, model)
    base = {"model": model, "backend": backend}
    kept: dict[str, list[Row]] = {s["seed_id"]: [] for s in seeds}
    drops: list[dict[str, Any]] = []
    pending = list(seeds)
    unfit: set[str] = set()  # seeds whose prompt can never fit the context window
    for attempt in range(max_attempts):
        attempt_params = params.model_copy(update={"seed": params.seed + attempt})
        outputs = llm.generate([build_messages(s, num_instructions) for s in pending], attempt_params)
        for seed, out in zip(pending, outputs):
            if failed := generation_drop(STAGE, out, seed):
                drops.append(failed)
                unfit.add(seed["seed_id"])
                continue
            rows, new_drops = instruction_rows(seed, out.text, num_instructions, base, params)
            have = {normalize(r["instruction"]) for r in kept[seed["seed_id"]]}
            for row in rows:
                if normalize(row["instruction"]) in have:
                    new_drops.append(drop(STAGE, "duplicate", seed, row["instruction"]))
                elif len(kept[seed["seed_id"]]) >= num_instructions:
                    new_drops.append(drop(STAGE, "over_cap", seed, row["instruction"]))
                else:
                    kept[seed["seed_id"]].append(row)
                    have.add(normalize(row["instruction"]))
            drops += new_drops
        pending = [
            s for s in pending if len(kept[s["seed_id"]]) < num_instructions and s["seed_id"] not in unfit
        ]
        if not pending:
            break
    return {"rows": [row for s in seeds for row in kept[s["seed_id"]]], "drops": drops}
