"""Cache keys of the technique tasks: computable wherever a task runs, and covering exactly what a
batch uses (its inputs, its templates, its code), so an edit recomputes only what it changes."""

import sys
from types import SimpleNamespace

from flows.instruct import instruct  # noqa: F401  (imports every technique the flow runs)
from tasks.backends import GenerationParams
from tasks.evol_instruct import MUTATIONS, choose_mutation, evolve_instructions
from tasks.respond import generate_responses
from tasks.templates import prompts

PARAMS = GenerationParams(max_new_tokens=16, seed=0)


def policy_key(task, inputs):
    """The key as Prefect's task engine computes it (`CachePolicy.compute_key`)."""
    context = SimpleNamespace(task=task)
    return task.cache_policy.compute_key(task_ctx=context, inputs=inputs, flow_parameters={})


def test_the_key_is_computed_in_a_process_that_never_imported_the_technique(monkeypatch):
    # A fresh Dask worker unpickles the task without importing its module (issue 23, point 1).
    inputs = {"rows": [{"id": "r", "instruction": "Say hi."}], "batch_index": "0"}
    inputs |= {"model": "fake", "backend": "fake", "params": PARAMS}
    expected = policy_key(generate_responses, inputs)
    monkeypatch.delitem(sys.modules, "tasks.respond")
    assert policy_key(generate_responses, inputs) == expected


def test_defaults_passed_or_not_give_one_key():
    inputs = {"rows": [{"id": "r", "instruction": "Say hi."}], "batch_index": "0"}
    inputs |= {"model": "fake", "backend": "fake", "params": PARAMS}
    assert policy_key(generate_responses, inputs) == policy_key(
        generate_responses, {**inputs, "template": "respond.jinja", "system_prompt": None}
    )


def evol_inputs(rows):
    return {
        "rows": rows,
        "batch_index": "0",
        "round": 1,
        "mutations": list(MUTATIONS),
        "seed": 0,
        "model": "fake",
        "backend": "fake",
        "params": PARAMS,
    }


def test_editing_one_mutation_template_recomputes_only_the_batches_that_use_it(monkeypatch):
    rows = [{"id": f"row{i}", "instruction": f"Task {i}."} for i in range(40)]
    chosen = {r["id"]: choose_mutation(0, r["id"], 1, list(MUTATIONS)) for r in rows}
    without = [r for r in rows if chosen[r["id"]] != "breadth"][:4]
    with_breadth = [r for r in rows if chosen[r["id"]] == "breadth"][:1] + without[:1]
    before = [policy_key(evolve_instructions, evol_inputs(b)) for b in (without, with_breadth)]

    original = prompts.source

    def edited(name, *rest):
        return original(name, *rest) + (" (edited)" if name.endswith("breadth.jinja") else "")

    monkeypatch.setattr(prompts, "source", edited)
    after = [policy_key(evolve_instructions, evol_inputs(b)) for b in (without, with_breadth)]
    assert after[0] == before[0]  # no row of this batch renders the breadth template
    assert after[1] != before[1]
