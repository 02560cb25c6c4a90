"""Magpie on the real embedded model (SmolLM2-135M-Instruct), end to end. Slow: about a minute.

A 135M model writes junk user turns often; the run must still produce exactly the rows asked for
(in further rounds), and every attempted row must end up either complete or dropped with a reason."""

import json

import pytest

from flows.magpie import magpie
from tasks.backends.embedded import EMBEDDED_MODEL
from tasks.quality.filters import refusal
from tasks.quality.self_contained import needs_context

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
SMALL = {"max_instruction_tokens": 64, "max_new_tokens": 24, "batch_size": 4}


def read_rows(path):
    return [json.loads(line) for line in open(path / "data.jsonl")]


def accounted(summary):
    after = ("deduplicate", "target")  # drops of rows that came out of the model calls
    dropped = sum(n for reason, n in summary["drops"].items() if not reason.startswith(after))
    return summary["rows_per_stage"]["magpie"] + dropped == summary["attempted"]


@pytest.mark.long
def test_single_and_two_turn_rows_on_the_embedded_model(tmp_path):
    one = magpie(num_rows=4, output_dir=tmp_path / "one", **SMALL)
    assert one["rows"] == 4 and accounted(one)
    assert one["pre_query"][0]["prompt"].endswith("<|im_end|>\n<|im_start|>user\n")
    for row in read_rows(tmp_path / "one"):
        assert row["instruction"].strip() and row["response"].strip()
        assert row["model"] == EMBEDDED_MODEL and row["backend"] == "transformers"
        assert "<|im_" not in row["instruction"] + row["response"]
        assert not refusal(row["response"]) and not needs_context(row["instruction"])

    # A short system prompt (under the paper's long multi-turn one, the 135M model's user turns run
    # on), and room for a long user turn: both turns of a row must end before the limit.
    longer = {**SMALL, "max_instruction_tokens": 128}
    system = "You are a helpful assistant."
    two = magpie(num_rows=6, n_turns=2, system_prompt=system, output_dir=tmp_path / "two", **longer)
    assert two["rows"] == 6 and accounted(two)
    for row in read_rows(tmp_path / "two"):
        assert [m["role"] for m in row["conversation"]] == ["user", "assistant"] * 2
        assert all(m["content"].strip() for m in row["conversation"])
