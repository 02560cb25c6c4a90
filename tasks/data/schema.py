"""Each flow's dataset schema, declared once as `datasets.Features`, so that what a run writes
(the `save_to_disk` copy, the Parquet shards and the card's `dataset_info`) has the same types
whatever the data: a column that happens to be empty in one run (no system prompt, no kept
evolution) is still a typed column, never `null`, and two runs of a flow load as one dataset.

A flow declares every column its rows can have; a row that lacks one gets its default (None,
except `grounded`, False). Columns no declaration names (a user template's input columns in
`generate`, every column of a flow composed by hand) take the type of their values, with an
all-empty column typed as a string rather than `null`.
"""

from __future__ import annotations

import json
from typing import Any

from datasets import Features, List, Value

from tasks.rows import Row

STRING, BOOL, INT = Value("string"), Value("bool"), Value("int64")
STRINGS = List(STRING)
MESSAGES = List({"role": STRING, "content": STRING})

# Provenance every row of every flow carries (tasks/rows.py); `generation` is JSON text because
# each stage's parameters have a shape of their own.
PROVENANCE = {
    "model": STRING,
    "backend": STRING,
    "techniques": STRINGS,
    "templates": STRINGS,
    "generation": STRING,
}

INSTRUCT = Features(
    {
        "id": STRING,
        "seed_id": STRING,
        "context": STRING,
        "instruction": STRING,
        "response": STRING,
        "response_truncated": BOOL,
        "grounded": BOOL,  # whether the response step saw the seed passage
        "system_prompt": STRING,
        "lineage": STRINGS,
        "mutations": STRINGS,
        "evol_depth": INT,
        "evol_drops": STRINGS,
        **PROVENANCE,
    }
)

# One schema for all of Magpie's row shapes: single-turn rows fill instruction/response,
# multi-turn rows fill `conversation`, only-instruction rows fill `instruction` alone.
MAGPIE = Features(
    {
        "id": STRING,
        "row_index": INT,
        "instruction": STRING,
        "response": STRING,
        "response_truncated": BOOL,
        "conversation": MESSAGES,
        "system_prompt": STRING,
        "system_prompt_key": STRING,
        "chat_template": STRING,
        "chat_template_source": STRING,
        **PROVENANCE,
    }
)

SELF_INSTRUCT = Features(
    {
        "id": STRING,
        "instruction": STRING,
        "response": STRING,
        "response_truncated": BOOL,
        "round": INT,
        "in_context": STRINGS,
        "system_prompt": STRING,
        "grounded": BOOL,  # always False: bootstrapped instructions have no passage
        **PROVENANCE,
    }
)

# The known columns of the two-step prompting flow; a user's template may read more input columns,
# which are typed from their values.
GENERATE = Features(
    {
        "id": STRING,
        "seed_id": STRING,
        "seed_instruction": STRING,
        "instruction": STRING,
        "instruction_truncated": BOOL,
        "response": STRING,
        "response_truncated": BOOL,
        "generation_index": INT,
        "system_prompt": STRING,
        **PROVENANCE,
    }
)

FLOW_FEATURES = {
    "instruct": INSTRUCT,
    "magpie": MAGPIE,
    "self_instruct": SELF_INSTRUCT,
    "generate": GENERATE,
}
COLUMN_DEFAULTS = {"grounded": False}


def declared(flow: str) -> Features:
    """The columns `flow` declares (a flow composed by hand declares only the provenance)."""
    return FLOW_FEATURES.get(flow, Features({"id": STRING, **PROVENANCE}))


def features_for(flow: str, rows: list[Row]) -> Features:
    """The flow's declared features, then any other column of `rows`, typed from its values."""
    known = declared(flow)
    extra = [c for c in dict.fromkeys(k for row in rows for k in row) if c not in known]
    return Features({**known, **{c: infer(records(rows, c)) for c in extra}})


def records(rows: list[Row], column: str) -> list[Any]:
    return [encode(column, row.get(column)) for row in rows]


def infer(values: list[Any]) -> Any:
    """The feature of a column of `values`; `null` (all empty) becomes a string."""
    import pyarrow as pa

    return _no_null(Features.from_arrow_schema(pa.schema([("v", pa.array(values).type)]))["v"])


def _no_null(feature: Any) -> Any:
    if isinstance(feature, Value) and feature.dtype == "null":
        return STRING
    if isinstance(feature, List):
        return List(_no_null(feature.feature), length=feature.length)
    if isinstance(feature, dict):
        return {k: _no_null(v) for k, v in feature.items()}
    return feature


def encode(column: str, value: Any) -> Any:
    # subtle: generation parameters differ in shape per stage; a JSON string keeps one schema.
    if column == "generation" and not isinstance(value, str) and value is not None:
        return json.dumps(value, sort_keys=True)
    return value


def table(rows: list[Row], features: Features) -> list[Row]:
    """`rows` as records with exactly the columns of `features`, in order, absent ones defaulted."""
    return [{c: encode(c, row[c]) if c in row else COLUMN_DEFAULTS.get(c) for c in features} for row in rows]


def to_dataset(rows: list[Row], features: Features) -> Any:
    """A `datasets.Dataset` of `rows` with `features` (typed even when there are no rows)."""
    from datasets import Dataset

    records = table(rows, features)
    return Dataset.from_dict({c: [r[c] for r in records] for c in features}, features=features)
