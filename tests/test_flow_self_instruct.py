"""The self_instruct flow (Self-Instruct's bootstrap from seed tasks) under a Prefect test server:
on the fake backend, and once, small, on the embedded model."""

import json

import datasets
import pytest
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from flows.self_instruct import self_instruct
from tasks.backends.fake import fake_text, prompt_text

pytestmark = pytest.mark.usefixtures("prefect_server")

SMALL = {
    "backend": "fake",
    "model": "fake",
    "num_instructions": 200,  # more than 5 rounds can keep: every round runs
    "max_rounds": 5,
    "prompts_per_round": 3,
}


def read_rows(path):
    return [json.loads(line) for line in open(path / "data.jsonl")]


def is_bootstrap(prompt) -> bool:
    return prompt_text(prompt).startswith("Come up with a series of tasks")


def bootstrap_calls(fake) -> list[list[str]]:
    """The prompts of each bootstrap generate call (one call per round), in order."""
    return [[prompt_text(p) for p in prompts] for prompts, _ in fake.calls if is_bootstrap(prompts[0])]


def test_flow_writes_instructions_with_rounds_and_drop_reasons(tmp_path, fake):
    summary = self_instruct(**SMALL, output_dir=tmp_path / "out")
    data = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    assert summary["rows"] == len(data) > 0
    assert [r["round"] for r in summary["rounds"]] == [1, 2, 3, 4, 5]
    assert summary["rows_per_stage"]["self_instruct_bootstrap"] == sum(r["kept"] for r in summary["rounds"])
    assert summary["drops"]["self_instruct_bootstrap:similar_to_pool"] > 0
    seeds = {json.loads(line)["instruction"] for line in open("data/seed_tasks.jsonl")}
    for row in data:
        assert row["instruction"] not in seeds and row["response"].strip()
        assert 1 <= row["round"] <= 5 and len(row["in_context"]) == 8
        assert row["techniques"] == ["self_instruct_bootstrap", "respond"]
        assert json.loads(row["generation"])["self_instruct_bootstrap"]["stop"] == ["\n\n"]
    drops = [json.loads(line) for line in open(tmp_path / "out" / "drops.jsonl")]
    similar = [d for d in drops if d["reason"] == "similar_to_pool"]
    assert all(d["round"] and d["score"] >= 0.7 and d["similar_to"] for d in similar)
    # Round 1 samples seed tasks only; later rounds show two generated instructions per prompt.
    calls = bootstrap_calls(fake)
    generated = {r["instruction"] for r in data}
    assert not any(g in p for p in calls[0] for g in generated)
    assert all(sum(f": {g}\n" in p for g in generated) == 2 for p in calls[-1])


def test_the_flow_stops_once_it_has_enough_instructions(tmp_path, fake):
    summary = self_instruct(**{**SMALL, "num_instructions": 4}, output_dir=tmp_path / "out")
    assert summary["rows"] == 4 and len(summary["rounds"]) == 1
    kept_in_round_1 = summary["rounds"][0]["kept"]
    assert summary["drops"].get("self_instruct_bootstrap:over_count", 0) == kept_in_round_1 - 4


def test_a_second_run_makes_no_model_calls(tmp_path, fake):
    self_instruct(**SMALL, output_dir=tmp_path / "a")
    assert fake.calls
    fake.calls.clear()
    self_instruct(**SMALL, output_dir=tmp_path / "b")
    assert fake.calls == []
    assert read_rows(tmp_path / "a") == read_rows(tmp_path / "b")


def test_an_interrupted_bootstrap_resumes_at_the_failed_round(tmp_path, fake):
    def fails_in_round_3(prompt, params):
        # A round samples with seed = run seed + round.
        if is_bootstrap(prompt) and params.seed == 3:
            raise ValueError("model server went away")  # not retried: the run fails here
        return fake_text(prompt, params)

    fake.responder = fails_in_round_3
    with pytest.raises(ValueError, match="went away"):
        self_instruct(**SMALL, output_dir=tmp_path / "out")
    failed_round_prompts = bootstrap_calls(fake)[-1]
    assert len(bootstrap_calls(fake)) == 3

    fake.responder = fake_text
    fake.calls.clear()
    self_instruct(**SMALL, output_dir=tmp_path / "out")
    resumed = bootstrap_calls(fake)
    assert len(resumed) == 3  # rounds 3, 4, 5; rounds 1 and 2 came from the cache
    assert resumed[0] == failed_round_prompts

    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / "fresh-results"}):
        self_instruct(**SMALL, output_dir=tmp_path / "clean")
    assert read_rows(tmp_path / "out") == read_rows(tmp_path / "clean")


def test_a_bigger_target_continues_the_pool_from_the_cache(tmp_path, fake):
    self_instruct(**{**SMALL, "max_rounds": 2}, output_dir=tmp_path / "a")
    fake.calls.clear()
    self_instruct(**{**SMALL, "max_rounds": 3}, output_dir=tmp_path / "a")
    assert len(bootstrap_calls(fake)) == 1  # only round 3 is new


@pytest.mark.slow
def test_self_instruct_on_the_embedded_model(tmp_path):
    summary = self_instruct(
        num_instructions=50,
        max_rounds=2,
        prompts_per_round=1,
        max_instruction_tokens=48,
        max_new_tokens=16,
        output_dir=tmp_path / "out",
    )
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert summary["rows_per_stage"]["self_instruct_bootstrap"] > 0
    for row in read_rows(tmp_path / "out"):
        assert row["model"] == "embedded:SmolLM2-135M-Instruct" and row["round"] in (1, 2)
        assert row["instruction"].strip() and row["response"].strip()


def test_help_lists_every_flow_parameter():
    from tasks.pipeline.cli import build_parser

    help_text = build_parser(self_instruct).format_help()
    schema = self_instruct.parameters.model_dump()
    for name, prop in schema["properties"].items():  # a group's fields are flags of their own
        group = schema["definitions"].get(prop.get("$ref", "").rsplit("/", 1)[-1])
        for field in group["properties"] if group else [name]:
            assert "--" + field.replace("_", "-") in help_text
    assert "ROUGE-L with every instruction" in " ".join(help_text.split())


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"name": "no instruction here"}', "line 1: no 'instruction' text"),
        (
            '{"instruction": "Name a river."}',
            "error: argument --similarity-threshold: must be greater than 0 and at most 1, got 1.5.",
        ),
    ],
)
def test_bad_input_ends_in_a_clear_error_before_any_run(tmp_path, line, message):
    import os
    import subprocess
    import sys

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(line + "\n")
    args = ["--backend", "fake", "--seed-tasks", str(seeds), "--similarity-threshold"]
    args.append("1.5" if "similarity" in message else "0.7")
    result = subprocess.run(
        [sys.executable, "flows/self_instruct.py", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PREFECT_HOME": str(tmp_path / "home")},
    )
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
