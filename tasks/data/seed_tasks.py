"""Seed tasks for bootstrapping (Self-Instruct, Wang et al., 2022, arXiv:2212.10560): the small
human-written pool the generated instructions grow from.

The paper's `seed_tasks.jsonl` format is read as is, one task per line:
    {"id", "name", "instruction", "instances": [{"input", "output"}], "is_classification"}
and so is a flat `{"instruction", "input", "output"}` line (or dataset row). Only the instruction
reaches the prompt (the paper generates instructions from instructions alone); the rest is kept
so a seed's provenance is complete. Bad input raises `SeedError` naming the line and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.data.seeds import SeedError, read_records
from tasks.rows import Row, stable_id

DEFAULT_SEED_TASKS = Path(__file__).resolve().parents[2] / "data" / "seed_tasks.jsonl"


def _first_instance(record: dict[str, Any], where: str) -> dict[str, str]:
    instances = record.get("instances")
    if instances is None:
        return {"input": record.get("input") or "", "output": record.get("output") or ""}
    if not isinstance(instances, list) or not all(isinstance(i, dict) for i in instances):
        raise SeedError(f'{where}: \'instances\' must be a list of {{"input", "output"}} objects.')
    first = instances[0] if instances else {}
    return {"input": first.get("input") or "", "output": first.get("output") or ""}


def seed_task_row(record: dict[str, Any], where: str) -> Row:
    """One seed task as a row: `seed_id`, `instruction`, `input`, `output`, `is_classification`."""
    instruction = record.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        columns = sorted(k for k in record if k != "_line")
        raise SeedError(
            f"{where}: no 'instruction' text (found columns {columns}). Each seed task needs an "
            '"instruction", as in {"instruction": "...", "instances": [{"input": "", "output": "..."}]}.'
        )
    instruction = " ".join(instruction.split())
    return {
        "seed_id": str(record.get("id") or stable_id(instruction)),
        "name": str(record.get("name") or ""),
        "instruction": instruction,
        **_first_instance(record, where),
        "is_classification": bool(record.get("is_classification", False)),
    }


def load_seed_tasks(source: str | Path | None = None) -> list[Row]:
    """Seed task rows from a JSONL file, a saved dataset or a Hub id (default: data/seed_tasks.jsonl),
    without repeated instructions."""
    source = source or DEFAULT_SEED_TASKS
    rows, seen = [], set()
    for index, record in enumerate(read_records(source)):
        where = f"{source}, " + (f"line {record['_line']}" if "_line" in record else f"record {index}")
        row = seed_task_row(record, where)
        if row["instruction"].lower() not in seen:
            seen.add(row["instruction"].lower())
            rows.append(row)
    if not rows:
        raise SeedError(f"{source} holds no seed tasks. Add one JSON object per line with an 'instruction'.")
    return rows
