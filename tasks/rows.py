"""Row and drop-record shapes shared by the techniques (every row carries its provenance), and the
exact deduplication of a stage's rows by their opening query."""

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


def opening_query(row: Row) -> str:
    """The user's first message: the `instruction`, else the first user turn of the `conversation`."""
    return row.get("instruction") or next(m["content"] for m in row["conversation"] if m["role"] == "user")


def drop_duplicates(rows: list[Row]) -> tuple[list[Row], list[dict]]:
    """Keep the first row of each normalized opening query; later ones become `duplicate` drops."""
    from tasks.quality.filters import normalize

    kept, drops, seen = [], [], set()
    for row in rows:
        query = opening_query(row)
        if normalize(query) in seen:
            drops.append(drop("deduplicate", "duplicate", row, query))
        else:
            seen.add(normalize(query))
            kept.append(row)
    return kept, drops
