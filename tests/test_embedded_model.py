"""The real embedded model (SmolLM2-135M-Instruct), end to end. Slow: about a minute each, more the
first time, when the GGUF file is converted once into the cache."""

import json

import datasets
import pytest

from flows.instruct import instruct
from tasks.backends import GenerationParams, get_backend
from tasks.backends.embedded import EMBEDDED_MODEL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    return get_backend("transformers", EMBEDDED_MODEL)


def test_batched_greedy_generation_matches_one_prompt_at_a_time(model):
    prompts = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "user", "content": "Give me three tips for keeping a sourdough starter alive."}],
        [{"role": "user", "content": "Why is the sky blue?"}],
    ]
    params = GenerationParams(max_new_tokens=24, temperature=0.0)
    batched = [g.text for g in model.generate(prompts, params)]
    alone = [model.generate([p], params)[0].text for p in prompts]
    assert batched == alone
    assert all(batched)


def test_generation_stops_at_end_of_turn_and_stop_strings(model):
    prompt = [{"role": "user", "content": "Say hello."}]
    gen = model.generate([prompt], GenerationParams(max_new_tokens=64, temperature=0.0))[0]
    assert gen.finish_reason == "stop" and "<|im_end|>" not in gen.text
    cut = model.generate([prompt], GenerationParams(max_new_tokens=64, temperature=0.0, stop=("l",)))[0]
    assert "l" not in cut.text and cut.finish_reason == "stop"


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.long
def test_instruct_flow_on_the_embedded_model(tmp_path, model):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        json.dumps(
            {"id": "tides", "context": "Tides are caused by the Moon's gravity pulling on the oceans."}
        )
        + "\n"
        + json.dumps({"id": "git", "context": "Git records snapshots of a project's files as commits."})
        + "\n"
    )
    summary = instruct(
        seeds=str(seeds),
        num_instructions=2,
        num_evolutions=1,
        max_new_tokens=48,
        output_dir=tmp_path / "out",
    )
    data = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    assert summary["rows"] == len(data) > 0
    assert {"instruction", "response", "seed_id", "model", "lineage", "generation"} <= set(data.column_names)
    for row in data:
        assert row["instruction"].strip() and row["response"].strip()
        assert row["model"] == EMBEDDED_MODEL and row["backend"] == "transformers"
        assert row["seed_id"] in ("tides", "git")
        assert json.loads(row["generation"])["respond"]["max_new_tokens"] == 48
