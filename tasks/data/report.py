"""Facts of a run that its report and card state, read off the final rows and the drop records:
which techniques it used (so the card cites those papers and no others), how many outputs of each
stage hit the token limit, and how many evolutions each EvolInstruct round kept."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from tasks.rows import Row

# Drop reasons that mean "the output ran into max_new_tokens".
TRUNCATED = frozenset({"truncated", "no_end_of_turn"})
# The flag a stage sets on the rows it keeps when their output was cut off (None: such outputs
# are dropped instead). A stage not named here is generate_text's own: `<stage>_truncated`.
FLAGS = {
    "respond": "response_truncated",
    "magpie_response": "response_truncated",
    "write_prompt": "instruction_truncated",
    "evol_instruct": None,
    "magpie": None,
}
# Stages that never cut an output at the token limit in a way a row shows.
UNFLAGGED = frozenset({"self_instruct", "self_instruct_bootstrap", "deduplicate"})


def technique(stage: str) -> str:
    """A stage's technique: `evol_instruct_2` (a round) is `evol_instruct`."""
    return re.sub(r"_\d+$", "", stage)


def techniques_used(rows: list[Row], counts: dict[str, int], drops: list[dict[str, Any]]) -> list[str]:
    """Every technique that ran, whether or not its outputs survived (an EvolInstruct round that
    kept nothing still ran)."""
    stages = [*counts, *(d["stage"] for d in drops), *(t for r in rows for t in r.get("techniques") or [])]
    return sorted({technique(s) for s in stages} - {"seeds", "final", "deduplicate"})


def truncation(rows: list[Row], drops: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per stage, outputs that hit the token limit (`hit`) out of the stage's outputs (`of`): the
    final rows it wrote plus the generations dropped at it. Kept outputs count by their
    `*_truncated` flag, dropped ones by their reason."""
    made = Counter(t for r in rows for t in r.get("techniques") or [])
    made.update(d["stage"] for d in drops)
    hit = Counter(d["stage"] for d in drops if d.get("reason") in TRUNCATED)
    out = {}
    for stage in made:
        flag = FLAGS.get(stage, f"{stage}_truncated")
        flagged = [r for r in rows if stage in (r.get("techniques") or []) and r.get(flag)] if flag else []
        observed = stage in FLAGS or stage in hit or any(flag in r for r in rows)
        if observed and stage not in UNFLAGGED:
            out[stage] = {"hit": hit[stage] + len(flagged), "of": made[stage]}
    return out


def truncation_markdown(summary: dict[str, Any]) -> str:
    table = summary.get("truncation") or {}
    if not table:
        return ""
    lines = "\n".join(
        f"| {stage} | {t['hit']} of {t['of']} ({100 * t['hit'] / max(t['of'], 1):.0f}%) |"
        for stage, t in table.items()
    )
    return (
        "Outputs that hit the token limit (`max_new_tokens`), by stage, out of the stage's outputs "
        "in the dataset and those it dropped (kept ones are flagged `*_truncated`):"
        "\n\n| stage | hit the limit |\n|---|---|\n" + lines
    )


def evolutions_markdown(summary: dict[str, Any]) -> str:
    rounds = summary.get("evolutions") or []
    if not rounds:
        return ""
    lines = "\n".join(f"| {r['round']} | {r['kept']} of {r['of']} |" for r in rounds)
    return (
        "Evolutions kept per EvolInstruct round (a row whose evolution is dropped keeps its parent):"
        f"\n\n| round | kept |\n|---|---|\n{lines}"
    )
