"""Magpie's input rows (Xu et al., 2024, arXiv:2406.08464): an id, an index and a system prompt
each (the output is deduplicated by opening query with `tasks.rows.drop_duplicates`).

System prompts are given as distilabel's Magpie takes them: one string, a list (each row draws
one uniformly), or a mapping name -> prompt (uniform) or name -> (prompt, weight). Each row's draw
is seeded from the run seed and the row's index, so a rerun or a resumed run makes the same
choices, and a mapping's name is kept on the row as `system_prompt_key`. A system prompt steers
the topic of the queries the model writes.
"""

from __future__ import annotations

import json
import random
from typing import Any

from tasks.rows import Row, stable_id
from tasks.templates import prompts

SystemPromptSpec = str | list[str] | dict[str, Any] | None
MULTI_TURN_TEMPLATE = "magpie/multi_turn_system.jinja"


def parse_spec(spec: SystemPromptSpec) -> SystemPromptSpec:
    """A spec as given on the command line: JSON text of a list or mapping is decoded."""
    if isinstance(spec, str) and spec.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(spec)
        except json.JSONDecodeError:
            return spec  # a prompt that merely starts with a bracket
    return spec


def options(spec: SystemPromptSpec) -> list[tuple[str | None, str, float]]:
    """(key, prompt, weight) of every choice; raises a ValueError naming what is wrong."""
    spec = parse_spec(spec)
    if spec is None or isinstance(spec, str):
        return [(None, spec, 1.0)] if spec else []
    if isinstance(spec, list):
        found = [(None, _text(p, f"system_prompt[{i}]"), 1.0) for i, p in enumerate(spec)]
    elif isinstance(spec, dict):
        found = [(str(k), *_weighted(k, v)) for k, v in spec.items()]
    else:
        raise ValueError(f"system_prompt must be a string, a list or a mapping, not {type(spec).__name__}.")
    if not found or sum(w for _, _, w in found) <= 0:
        raise ValueError("system_prompt lists no prompt with a positive weight; give at least one.")
    return found


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be a non-empty string, got {value!r}.")
    return value


def _weighted(key: Any, value: Any) -> tuple[str, float]:
    if isinstance(value, str):
        return _text(value, f"system_prompt[{key!r}]"), 1.0
    if isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[1], (int, float)):
        if value[1] < 0:
            raise ValueError(f"system_prompt[{key!r}] has a negative weight {value[1]}.")
        return _text(value[0], f"system_prompt[{key!r}]"), float(value[1])
    raise ValueError(f"system_prompt[{key!r}] must be a prompt or a [prompt, weight] pair, got {value!r}.")


def choose(choices: list[tuple[str | None, str, float]], seed: int, index: int) -> tuple[str | None, str]:
    """The (key, prompt) of row `index`: random, but fixed by the run seed and the index."""
    rng = random.Random(f"{seed}:magpie:{index}")
    key, prompt, _ = rng.choices(choices, weights=[w for _, _, w in choices])[0]
    return key, prompt


def magpie_rows(
    num_rows: int, spec: SystemPromptSpec, seed: int, n_turns: int = 1, start: int = 0
) -> list[Row]:
    """The input rows of a Magpie run: an id, an index and the system prompt each row uses; a
    later round of the same run continues the indices from `start`.

    A multi-turn run given no system prompt uses the paper's multi-turn one, as distilabel does."""
    choices = options(spec)
    if not choices and n_turns > 1:
        choices = [(None, prompts.render(MULTI_TURN_TEMPLATE), 1.0)]
    rows = []
    for index in range(start, start + num_rows):
        key, prompt = choose(choices, seed, index) if choices else (None, None)
        row = {"id": stable_id("magpie", str(seed), str(index)), "row_index": index, "system_prompt": prompt}
        if isinstance(parse_spec(spec), dict):
            row["system_prompt_key"] = key
        rows.append(row)
    return rows
