"""The Magpie flow on the fake backend (ChatML), under a Prefect test server, and its row inputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from flows.magpie import magpie
from tasks.backends.fake import fake_text
from tasks.magpie_rows import magpie_rows, options

pytestmark = pytest.mark.usefixtures("prefect_server")

ROOT = Path(__file__).resolve().parents[1]
FAKE = {"backend": "fake", "model": "fake", "num_rows": 6}
PROVENANCE = ["id", "row_index", "model", "backend", "techniques", "templates", "generation", "system_prompt"]


def read_rows(path):
    return [json.loads(line) for line in open(path / "data.jsonl")]


def is_user_turn(prompt) -> bool:
    return isinstance(prompt, str) and prompt.endswith("<|im_start|>user\n")


def test_single_turn_rows_have_instruction_response_and_provenance(tmp_path, fake):
    summary = magpie(**FAKE, output_dir=tmp_path / "out")
    data = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    assert summary["rows"] == len(data) == 6
    assert {"instruction", "response", "response_truncated", *PROVENANCE} <= set(data.column_names)
    # One schema for every Magpie run: the columns this run does not fill are there, empty.
    assert data["conversation"] == [None] * 6 and data["system_prompt_key"] == [None] * 6
    for row in data:
        assert row["instruction"].strip() and row["response"].strip()
        assert row["techniques"] == ["magpie", "magpie_response"]
        generation = json.loads(row["generation"])
        assert (
            generation["magpie"]["temperature"] == 1.0 and generation["magpie_response"]["temperature"] == 0
        )
    user_calls = [call for call in fake.calls if all(is_user_turn(p) for p in call[0])]
    assert len(fake.calls) == 2 and len(user_calls) == 1  # one batch: one user call, one reply call
    prompts, params = user_calls[0]
    assert prompts == ["<|im_start|>user\n"] * 6 and params.stop == ("<|im_end|>",)
    assert summary["pre_query"] == [{"prompt": "<|im_start|>user\n", "stop": ["<|im_end|>"]}]


def test_two_turn_conversations_render_the_history_before_the_next_user_turn(tmp_path, fake):
    summary = magpie(**FAKE, n_turns=2, include_system_prompt=True, output_dir=tmp_path / "out")
    rows = read_rows(tmp_path / "out")
    assert summary["rows"] == len(rows) == 6
    for row in rows:
        roles = [m["role"] for m in row["conversation"]]
        assert roles == ["system", "user", "assistant", "user", "assistant"]
        assert "multi-round conversation" in row["conversation"][0]["content"]  # the paper's prompt
        assert row["instruction"] is None and row["response"] is None
    second_turn = [p for p in fake.prompts if is_user_turn(p) and "<|im_start|>assistant\n" in p]
    assert len(second_turn) == 6
    for prompt in second_turn:
        assert prompt.startswith("<|im_start|>system\n") and prompt.count("<|im_start|>system") == 1
    assert len(fake.calls) == 4  # two turns, each one user call and one reply call


def test_only_instruction_and_end_with_user(tmp_path, fake):
    magpie(**FAKE, only_instruction=True, output_dir=tmp_path / "a")
    assert all(r["response"] is None and r["instruction"] for r in read_rows(tmp_path / "a"))
    magpie(**FAKE, n_turns=2, end_with_user=True, output_dir=tmp_path / "b")
    for row in read_rows(tmp_path / "b"):
        assert [m["role"] for m in row["conversation"]] == ["user", "assistant", "user"]
        assert row["system_prompt"] is None  # used, but not kept
    assert len(fake.calls) == 1 + 3


def test_a_system_prompt_mapping_is_drawn_per_row_and_named(tmp_path, fake):
    spec = {"cooking": ["You answer cooking questions.", 3], "math": ["You teach math.", 1]}
    magpie(
        **{**FAKE, "num_rows": 12}, system_prompt=spec, include_system_prompt=True, output_dir=tmp_path / "a"
    )
    rows = read_rows(tmp_path / "a")
    assert {r["system_prompt_key"] for r in rows} == {"cooking", "math"}
    for row in rows:
        assert row["system_prompt"] == spec[row["system_prompt_key"]][0]
    assert sorted(p for p in fake.prompts if is_user_turn(p)) == sorted(
        f"<|im_start|>system\n{spec[r['system_prompt_key']][0]}<|im_end|>\n<|im_start|>user\n" for r in rows
    )


def test_bad_user_turns_are_dropped_with_reasons_never_half_filled(tmp_path, fake):
    def derailing(prompt, params):
        if not is_user_turn(prompt):
            return "" if "Ask about ducks" in prompt else "A fine answer."
        return ["", "assistant\nSure!", "Hi", "Ask about ducks please now", "What is a tide?"][
            params.seed % 5
        ]

    fake.responder = derailing
    summary = magpie(**{**FAKE, "num_rows": 20}, max_rounds=1, output_dir=tmp_path / "out")
    rows, drops = read_rows(tmp_path / "out"), [json.loads(x) for x in open(tmp_path / "out" / "drops.jsonl")]
    assert all(r["instruction"] == "What is a tide?" and r["response"] == "A fine answer." for r in rows)
    reasons = summary["drops"]
    assert {"magpie:empty", "magpie:echo_of_template", "magpie:too_short", "magpie_response:empty"} <= set(
        reasons
    )
    assert summary["rows"] + sum(reasons.values()) == 20  # every row is kept or dropped with a reason
    assert all(d["row_id"] and d["reason"] for d in drops)


def test_rows_that_fail_are_generated_again_until_num_rows_pass(tmp_path, fake):
    def flaky(prompt, params):
        if not is_user_turn(prompt):
            return "I'm sorry, but as an AI I cannot help." if "refuse" in prompt else "A fine answer."
        turns = ["", f"Why do tides change {params.seed}?", "Please refuse my request about tides"]
        return turns[params.seed % 3]

    fake.responder = flaky
    summary = magpie(**{**FAKE, "num_rows": 10}, output_dir=tmp_path / "out")
    rows = read_rows(tmp_path / "out")
    assert summary["rows"] == len(rows) == 10 and summary["rounds"] > 1
    assert all(r["instruction"].startswith("Why do tides change") for r in rows)
    assert summary["drops"]["magpie_response:refusal"] > 0 and summary["drops"]["magpie:empty"] > 0
    assert len({r["id"] for r in rows}) == 10
    fake.calls.clear()  # every round is cached: a rerun makes no model calls
    assert magpie(**{**FAKE, "num_rows": 10}, output_dir=tmp_path / "again")["rows"] == 10
    assert fake.calls == [] and read_rows(tmp_path / "again") == rows


def test_a_target_out_of_reach_stops_after_max_rounds_and_says_so(tmp_path, fake, caplog):
    fake.responder = lambda prompt, params: "" if is_user_turn(prompt) else "A fine answer."
    summary = magpie(**{**FAKE, "num_rows": 4}, max_rounds=3, output_dir=tmp_path / "out")
    assert summary["rows"] == 0 and summary["rounds"] == 3
    assert "Reached 0 of 4 rows after 3 round(s)" in caplog.text and "magpie:empty" in caplog.text


def test_a_second_run_makes_no_model_calls_and_seeds_change_the_data(tmp_path, fake):
    magpie(**FAKE, output_dir=tmp_path / "a")
    fake.calls.clear()
    magpie(**FAKE, output_dir=tmp_path / "b")
    assert fake.calls == [] and read_rows(tmp_path / "a") == read_rows(tmp_path / "b")
    magpie(**FAKE, seed=1, output_dir=tmp_path / "c")
    assert read_rows(tmp_path / "a") != read_rows(tmp_path / "c")


def test_batches_sample_different_queries(tmp_path, fake):
    fake.responder = lambda prompt, params: fake_text(prompt, params) if is_user_turn(prompt) else "ok fine"
    summary = magpie(**{**FAKE, "num_rows": 8}, batch_size=2, output_dir=tmp_path / "out")
    assert summary["rows"] == 8 and "deduplicate:duplicate" not in summary["drops"]


def test_system_prompt_choices_are_seeded_by_run_seed_and_row():
    spec = ["A", "B", "C"]
    assert magpie_rows(30, spec, seed=0) == magpie_rows(30, spec, seed=0)
    assert magpie_rows(30, spec, seed=0) != magpie_rows(30, spec, seed=1)
    assert {r["system_prompt"] for r in magpie_rows(30, spec, seed=0)} == set(spec)
    weighted = magpie_rows(30, {"a": ["A", 1.0], "never": ["N", 0]}, seed=0)
    assert {(r["system_prompt_key"], r["system_prompt"]) for r in weighted} == {("a", "A")}
    assert magpie_rows(2, '["X", "Y"]', seed=0)[0]["system_prompt"] in ("X", "Y")  # JSON from the CLI


@pytest.mark.parametrize(
    "spec, message",
    [
        ([], "no prompt"),
        ({"a": ["A", -1]}, "negative weight"),
        ({"a": 3}, "prompt or a"),
        ([""], "non-empty"),
    ],
)
def test_bad_system_prompt_specs_fail_clearly(spec, message):
    with pytest.raises(ValueError, match=message):
        options(spec)


def test_cli_rejects_conflicting_flags_before_any_run(tmp_path):
    result = subprocess.run(
        [sys.executable, "flows/magpie.py", "--backend", "fake", "--only-instruction", "--n-turns", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PREFECT_HOME": str(tmp_path)},
    )
    assert result.returncode == 2 and "--only-instruction writes one instruction" in result.stderr
    assert "Traceback" not in result.stderr
