"""Exactly the rows asked for: filters drop generations, so a flow generates again for what is
missing, in further cached rounds, until its target is met or a bounded number of rounds is spent.

Each round's task runs are keyed on their content like any other (a round samples with seeds of its
own), so a rerun makes no model calls and a killed run resumes from the last finished round.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

from tasks.rows import Row, drop

STAGE = "target"


def missing(kept: Iterable[Row], targets: dict[str, int], key: str = "seed_id") -> dict[str, int]:
    """How many rows each key still lacks (keys that have enough are left out)."""
    have = Counter(row[key] for row in kept)
    return {k: n - have[k] for k, n in targets.items() if n > have[k]}


def take(
    rows: list[Row], wanted: dict[str, int], key: str = "seed_id"
) -> tuple[list[Row], list[dict[str, Any]]]:
    """The first `wanted[k]` rows of each key, in order; the rest become `over_target` drops."""
    left = dict(wanted)
    kept, drops = [], []
    for row in rows:
        if left.get(row[key], 0) > 0:
            left[row[key]] -= 1
            kept.append(row)
        else:
            drops.append(drop(STAGE, "over_target", row, row.get("instruction")))
    return kept, drops


def take_first(rows: list[Row], wanted: int) -> tuple[list[Row], list[dict[str, Any]]]:
    """The first `wanted` rows; the rest become `over_target` drops."""
    return rows[:wanted], [drop(STAGE, "over_target", row, row.get("instruction")) for row in rows[wanted:]]


def next_count(short: int, attempted: int, kept: int, most: float = 4.0) -> int:
    """Rows to attempt for `short` missing ones, given that `kept` of `attempted` passed so far:
    scaled by the share that passed (at most `most` times as many), so one more round usually does."""
    if not attempted:
        return short
    return min(math.ceil(short * attempted / max(kept, 1)), math.ceil(short * most))


def shortfall_message(reached: int, target: int, rounds: int, drops: list[dict[str, Any]]) -> str:
    """What a user reads when the target was not met: how far it got, after what, and why."""
    reasons = Counter(f"{d['stage']}:{d['reason']}" for d in drops if d["stage"] != STAGE)
    top = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common(4))
    return (
        f"Reached {reached} of {target} rows after {rounds} round(s): the filters dropped too many "
        f"generations ({top or 'no drops recorded'}; see drops.jsonl). A larger model, or more "
        "rounds (--max-rounds, where the flow has it), gets closer to the target."
    )


def by_seed(rows: list[Row], seeds: list[Row]) -> list[Row]:
    """`rows` grouped in seed order (rows of one seed keep their order): later rounds' rows land
    beside their passage's earlier ones."""
    position = {seed["seed_id"]: i for i, seed in enumerate(seeds)}
    return sorted(rows, key=lambda row: position.get(row["seed_id"], len(position)))
