"""The instruct flow on the real embedded model (SmolLM2-135M-Instruct), on passages of our own from
domains the shipped ones do not cover. Slow: about a minute.

The 135M model writes vague questions, repeats itself and answers badly often; the run must still
write exactly `num_instructions` rows per passage, none needing its passage to be understood, every
answer written with the passage at hand."""

import json
from pathlib import Path

import pytest

from flows.instruct import instruct
from tasks.quality.filters import non_answer, refusal
from tasks.quality.self_contained import needs_context

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
PASSAGES = Path(__file__).resolve().parents[1] / "bench" / "passages" / "other_domains.jsonl"


@pytest.mark.long
def test_every_passage_gets_its_rows_and_every_row_passes_the_filters(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    lines = open(PASSAGES).read().splitlines()
    seeds.write_text("\n".join(lines[i] for i in (0, 6, 9)) + "\n")  # law, history, medicine
    summary = instruct(
        seeds=str(seeds), num_instructions=3, num_evolutions=0, max_new_tokens=64, output_dir=tmp_path / "out"
    )
    rows = [json.loads(line) for line in open(tmp_path / "out" / "data.jsonl")]
    assert summary["rows"] == len(rows) == 9
    assert sorted({r["seed_id"] for r in rows}) == sorted(json.loads(lines[i])["id"] for i in (0, 6, 9))
    for row in rows:
        assert row["grounded"] is True and row["templates"][-1] == "respond_grounded.jinja"
        assert not needs_context(row["instruction"]), row["instruction"]
        assert not refusal(row["response"]) and not non_answer(row["response"], row["instruction"])
