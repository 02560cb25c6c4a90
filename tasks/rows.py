"""Row and drop-record shapes shared by the techniques: every row carries its provenance."""

from __future__ import annotations

import hashlib
from typing import Any

from tasks.backends import Generation, GenerationParams
from tasks.templates import prompts

Row = dict[str, Any]


def stable_id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def with_stage(row: Row, stage: str, template: str, params: GenerationParams, **fields: Any) -> Row:
    """A copy of `row` with `fields` set and `stage` recorded in its provenance."""
    out = {**row, **fields}
    out["techniques"] = [*row.get("techniques", []), stage]
    out["templates"] = [*row.get("templates", []), prompts.label(template)]
    out["generation"] = {**row.get("generation", {}), stage: params.model_dump(mode="json")}
    return out


def drop(stage: str, reason: str, row: Row, text: str | None = None) -> dict[str, Any]:
    """A named reason why `stage` produced no row (or no change) from `row`; saved and counted."""
    return {
        "stage": stage,
        "reason": reason,
        "seed_id": row.get("seed_id"),
        "row_id": row.get("id"),
        "text": text,
    }


def generation_drop(stage: str, gen: Generation, row: Row) -> dict[str, Any] | None:
    if gen.finish_reason == "prompt_too_long":
        return drop(stage, "prompt_too_long", row)
    return None


def in_order(rows: list[Row], reference: list[Row]) -> list[Row]:
    """`rows` sorted by where their ids appear in `reference` (a stage's input order)."""
    position = {row["id"]: i for i, row in enumerate(reference)}
    return sorted(rows, key=lambda row: position.get(row["id"], len(position)))


def drop_duplicates(rows: list[Row], column: str = "instruction") -> tuple[list[Row], list[dict]]:
    """Keep the first row of each normalized `column` text; later ones become `duplicate` drops."""
    from tasks.quality.filters import normalize

    kept, drops, seen = [], [], set()
    for row in rows:
        key = normalize(row[column])
        if key in seen:
            drops.append(drop("deduplicate", "duplicate", row, row[column]))
        else:
            seen.add(key)
            kept.append(row)
    return kept, drops
