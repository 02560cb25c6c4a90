"""The instruct flow on the fake backend, under a Prefect test server."""

import json
from pathlib import Path

import datasets
import pytest
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from flows.instruct import instruct
from tasks.backends.fake import fake_text, prompt_text

pytestmark = pytest.mark.usefixtures("prefect_server")

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ["tides", "sourdough", "git", "vaccines", "compound-interest", "bees"]
SMALL = {"backend": "fake", "model": "fake", "num_instructions": 3, "num_evolutions": 2}
PROVENANCE = [
    "id",
    "seed_id",
    "context",
    "model",
    "backend",
    "techniques",
    "templates",
    "generation",
    "lineage",
    "mutations",
    "evol_depth",
    "evol_drops",
]


def read_rows(path):
    return [json.loads(line) for line in open(path / "data.jsonl")]


def is_self_instruct(prompt) -> bool:
    return "Questions:" in prompt_text(prompt)


def test_flow_writes_a_dataset_with_provenance(tmp_path, fake):
    summary = instruct(**SMALL, output_dir=tmp_path / "out")
    data = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    assert summary["rows"] == len(data) > 0
    assert {"instruction", "response", *PROVENANCE} <= set(data.column_names)
    for row in data:
        assert row["instruction"].strip() and row["response"].strip()
        assert row["model"] == "fake" and row["backend"] == "fake"
        assert row["techniques"][0] == "self_instruct" and row["techniques"][-1] == "respond"
        assert len(row["lineage"]) == row["evol_depth"] + 1 == len(row["mutations"]) + 1
        assert row["lineage"][-1] == row["instruction"]
        assert set(json.loads(row["generation"])) >= {"self_instruct", "respond"}
    assert read_rows(tmp_path / "out") == [{**r, "system_prompt": r["system_prompt"]} for r in data.to_list()]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["rows"] == len(data)


def test_a_second_run_makes_no_model_calls(tmp_path, fake):
    first = instruct(**SMALL, output_dir=tmp_path / "a")
    assert fake.calls
    fake.calls.clear()
    second = instruct(**SMALL, output_dir=tmp_path / "b")
    assert fake.calls == []
    assert read_rows(tmp_path / "a") == read_rows(tmp_path / "b")
    assert first["rows"] == second["rows"]


def test_a_failed_row_is_recomputed_by_the_next_run_and_nothing_else(tmp_path, fake):
    def broken_for_bees(prompt, params):
        if is_self_instruct(prompt) and "waggle dance" in prompt_text(prompt):
            raise ValueError("backend went away")  # not retried
        return fake_text(prompt, params)

    fake.responder = broken_for_bees
    first = instruct(**SMALL, batch_size=2, output_dir=tmp_path / "out")  # 6 seeds: 3 batches
    assert first["failures"] == 1  # the bees seed, isolated from its batch neighbour
    failures = [json.loads(line) for line in open(tmp_path / "out" / "failures.jsonl")]
    assert failures[0]["seed_id"] == "bees" and "backend went away" in failures[0]["error"]
    assert all(r["seed_id"] != "bees" for r in read_rows(tmp_path / "out"))

    fake.responder = fake_text
    fake.calls.clear()
    resumed = instruct(**SMALL, batch_size=2, output_dir=tmp_path / "out")
    self_instruct_prompts = [p for p in fake.prompts if is_self_instruct(p)]
    assert len({prompt_text(p) for p in self_instruct_prompts}) == 1  # only the row that failed alone
    assert resumed["failures"] == 0

    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / "fresh-results"}):
        clean = instruct(**SMALL, batch_size=2, output_dir=tmp_path / "clean")
    assert read_rows(tmp_path / "out") == read_rows(tmp_path / "clean")
    assert resumed["rows"] == clean["rows"]


def test_a_transient_backend_error_is_retried(tmp_path, fake):
    failures = []

    def flaky(prompt, params):
        if not failures:
            failures.append(1)
            raise ConnectionError("connection reset")
        return fake_text(prompt, params)

    fake.responder = flaky
    summary = instruct(**{**SMALL, "num_evolutions": 0}, output_dir=tmp_path / "out")
    assert failures and summary["rows"] > 0


def test_the_run_seed_changes_the_data_and_the_same_seed_repeats_it(tmp_path, fake):
    a = instruct(**SMALL, seed=1, output_dir=tmp_path / "a")
    b = instruct(**SMALL, seed=2, output_dir=tmp_path / "b")
    assert read_rows(tmp_path / "a") != read_rows(tmp_path / "b")
    assert a["rows"] > 0 and b["rows"] > 0


def test_bad_generations_are_dropped_with_reasons_not_raised(tmp_path, fake):
    def derailing(prompt, params):
        text = prompt_text(prompt)
        if is_self_instruct(prompt):
            return "\n".join(
                [
                    "Here are the questions:",
                    "1. What is it?",
                    "2. What is it?",
                    "3. 🐝🐝🐝🐝",
                    "4. Why do bees dance at all?",
                ]
            )
        if "Prompt Rewriter" in text or "Prompt Creator" in text:
            return "#Rewritten Prompt#: the given prompt again"
        return "I'm sorry, I cannot help with that." if "dance" in text else "A fine answer."

    fake.responder = derailing
    summary = instruct(**{**SMALL, "num_evolutions": 1}, output_dir=tmp_path / "out")
    reasons = summary["drops"]
    assert reasons.get("self_instruct:not_a_request") and reasons.get("self_instruct:duplicate")
    assert reasons.get("evol_instruct:echo_of_prompt") and reasons.get("respond:refusal")
    drops = [json.loads(line) for line in open(tmp_path / "out" / "drops.jsonl")]
    assert all(d["reason"] and d["stage"] for d in drops)
    assert all("dance" not in r["instruction"] for r in read_rows(tmp_path / "out"))


def test_a_seed_longer_than_the_context_window_is_skipped_with_a_reason(tmp_path):
    seeds = tmp_path / "s.jsonl"
    long_seed = json.dumps({"id": "long", "context": " ".join(["word"] * 300)})
    seeds.write_text(
        long_seed + "\n" + json.dumps({"id": "short", "context": "Bees dance to share food."}) + "\n"
    )
    summary = instruct(**SMALL | {"model": "fake?context=120"}, seeds=str(seeds), output_dir=tmp_path / "out")
    assert summary["drops"]["self_instruct:prompt_too_long"] == 1
    assert summary["rows"] > 0 and {r["seed_id"] for r in read_rows(tmp_path / "out")} == {"short"}


def test_near_duplicate_instructions_across_seeds_are_dropped(tmp_path, fake):
    def similar(prompt, params):
        text = prompt_text(prompt)
        if is_self_instruct(prompt):
            day = "every" if "waggle" in text else "each"
            return f"Explain how the tides rise and fall {day} single day near the coast."
        return "An answer about tides."

    fake.responder = similar
    summary = instruct(**{**SMALL, "num_evolutions": 0}, max_rounds=1, output_dir=tmp_path / "out")
    assert summary["rows"] == 1
    assert summary["drops"]["deduplicate:near_duplicate"] == 1  # 'every' vs 'each': ROUGE-L 0.92
    assert summary["drops"]["deduplicate:duplicate"] == 4


def test_responses_see_the_passage_by_default_and_rows_say_so(tmp_path, fake):
    instruct(**{**SMALL, "num_evolutions": 0}, output_dir=tmp_path / "grounded")
    answers = [prompt_text(p) for p in fake.prompts if "Question:" in prompt_text(p)]
    passages = {json.loads(line)["context"] for line in open(ROOT / "data" / "seed_contexts.jsonl")}
    assert all(any(p in a for p in passages) for a in answers)  # the passage is in every response prompt
    rows = read_rows(tmp_path / "grounded")
    assert rows and all(r["grounded"] is True for r in rows)
    assert all(r["templates"][-1] == "respond_grounded.jinja" for r in rows)
    assert all(not any(p in r["instruction"] for p in passages) for r in rows)  # the instruction stays bare

    fake.calls.clear()
    instruct(**{**SMALL, "num_evolutions": 0}, ground_responses=False, output_dir=tmp_path / "bare")
    rows = read_rows(tmp_path / "bare")
    assert rows and all(r["grounded"] is False and r["templates"][-1] == "respond.jinja" for r in rows)
    assert not any(
        any(p in prompt_text(q) for p in passages) for q in fake.prompts if "Questions:" not in prompt_text(q)
    )


def test_passages_short_of_their_queries_are_asked_again_until_each_has_its_rows(tmp_path, fake):
    def vague_at_first(prompt, params):
        if is_self_instruct(prompt):
            if params.seed < 3:  # round 1 (seeds 0-2): questions that need the passage
                return "1. How does it work?\n2. What are the benefits?\n3. What is the process?"
            return fake_text(prompt, params)
        return fake_text(prompt, params)

    fake.responder = vague_at_first
    summary = instruct(**{**SMALL, "num_evolutions": 0}, output_dir=tmp_path / "out")
    assert summary["rows"] == summary["target_rows"] == 3 * 6 and summary["rounds"] >= 2
    assert summary["drops"]["self_instruct:needs_context"] > 0
    rows = read_rows(tmp_path / "out")
    assert [r["seed_id"] for r in rows] == [s for s in SEEDS for _ in range(3)]  # each passage, in order
    fake.calls.clear()  # every round came from the cache
    instruct(**{**SMALL, "num_evolutions": 0}, output_dir=tmp_path / "again")
    assert fake.calls == [] and read_rows(tmp_path / "again") == rows


def test_a_target_out_of_reach_stops_after_max_rounds_and_says_why(tmp_path, fake, caplog):
    fake.responder = lambda prompt, params: "1. How does it work?" if is_self_instruct(prompt) else "Fine."
    summary = instruct(**{**SMALL, "num_evolutions": 0}, max_rounds=2, output_dir=tmp_path / "out")
    assert summary["rows"] == 0 and summary["rounds"] == 2
    assert "Reached 0 of 18 rows after 2 round(s)" in caplog.text and "needs_context" in caplog.text


def task_runs_of(flow_run_id, until: str, timeout: float = 60) -> list:
    """The flow run's task runs as the API records them (the server writes them from events, so
    poll until the last one, named `until`-something, is there)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            if any(r.name.startswith(until) for r in runs) or time.monotonic() > deadline:
                return runs


def test_the_run_graph_joins_each_stage_to_the_batches_it_consumed(tmp_path, fake):
    state = instruct(
        **{**SMALL, "num_evolutions": 1},
        batch_size=4,
        max_rounds=1,
        output_dir=tmp_path / "out",
        return_state=True,
    )
    runs = task_runs_of(state.state_details.flow_run_id, until="save_dataset")
    by_id = {r.id: r for r in runs}

    def upstream(run) -> set[str]:
        return {by_id[i.id].name for i in run.task_inputs.get("wait_for", [])}

    stage = {
        s: [r for r in runs if r.name.startswith(s + "[")]
        for s in ("self_instruct", "evol_instruct", "respond")
    }
    # 6 passages in batches of 4: two SelfInstruct batches; their 3 queries per passage, 4 to a batch
    assert sorted(r.name for r in stage["self_instruct"]) == ["self_instruct[0]", "self_instruct[1]"]
    evolve = sorted(stage["evol_instruct"], key=lambda r: int(r.name.split("[")[1].rstrip("]")))
    # each EvolInstruct batch waits on the SelfInstruct batch that wrote its queries: passages 1-4
    # gave queries 1-12 (EvolInstruct batches 0-2), passages 5-6 queries 13-18 (batches 3-4)
    first, second = {"self_instruct[0]"}, {"self_instruct[1]"}
    assert [upstream(r) for r in evolve] == [first, first, first, second, second]
    # responses hang from the evolutions they answer, the save from the responses
    assert all(upstream(r) and upstream(r) <= {e.name for e in evolve} for r in stage["respond"])
    (save,) = [r for r in runs if r.name.startswith("save_dataset")]
    assert upstream(save) and upstream(save) <= {r.name for r in stage["respond"]}
