"""flows/generate.py (write a user message, answer it) and the pipeline docs/notebook.md shows, on the fake
backend under a Prefect test server; one small run on the embedded model, marked slow."""

import json
import re
from pathlib import Path

import datasets
import pytest

from flows.generate import check_inputs, generate
from tasks.backends.fake import prompt_text
from tasks.pipeline.cli import build_parser, main

pytestmark = pytest.mark.usefixtures("prefect_server")

ROOT = Path(__file__).resolve().parents[1]
FAKE = {"backend": "fake", "model": "fake"}
ASKS = ["a question about why tides happen", "help naming a grey cat"]


def read_rows(path):
    return [json.loads(line) for line in open(path / "data.jsonl")]


def test_flow_writes_messages_then_answers_them(tmp_path, fake):
    summary = generate(**FAKE, instruction=ASKS, system_prompt="Be kind.", output_dir=tmp_path / "out")
    data = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    assert summary["rows"] == len(data) == 2
    sent = [prompt_text(p) for p in fake.prompts]
    for row in data:
        assert row["seed_instruction"] in ASKS and row["instruction"] and row["response"]
        assert row["techniques"] == ["write_prompt", "respond"]
        assert row["templates"] == ["generate/write_prompt.jinja", "respond.jinja"]
        assert set(json.loads(row["generation"])) == {"write_prompt", "respond"}
        assert row["system_prompt"] == "Be kind." and row["model"] == "fake"
        # Step 1 saw the description; step 2 answered exactly the message step 1 wrote.
        assert any(row["seed_instruction"] in p and "<system>" not in p for p in sent)
        assert f"<system>Be kind.\n<user>{row['instruction']}" in sent
    assert summary["rows_per_stage"] == {"seeds": 2, "write_prompt": 2, "respond": 2, "final": 2}


def test_a_second_run_makes_no_model_calls(tmp_path, fake):
    generate(**FAKE, output_dir=tmp_path / "a")  # the shipped examples
    assert fake.calls
    fake.calls.clear()
    generate(**FAKE, output_dir=tmp_path / "b")
    assert fake.calls == []
    assert read_rows(tmp_path / "a") == read_rows(tmp_path / "b")


def test_several_messages_per_row_use_successive_seeds(tmp_path, fake):
    generate(**FAKE, instruction=ASKS[:1], num_generations=3, seed=5, output_dir=tmp_path / "out")
    rows = read_rows(tmp_path / "out")
    assert sorted(r["generation_index"] for r in rows) == [0, 1, 2]
    assert sorted(json.loads(r["generation"])["write_prompt"]["seed"] for r in rows) == [5, 6, 7]
    assert len({r["id"] for r in rows}) == len({r["instruction"] for r in rows}) == 3


def test_own_templates_and_input_columns(tmp_path, fake):
    source = tmp_path / "rows.jsonl"
    source.write_text(json.dumps({"id": "t", "request": "tides", "audience": "children"}) + "\n")
    generate(
        **FAKE,
        rows=str(source),
        column="request",
        prompt_template="Ask about {{ seed_instruction }} as {{ audience }} would.",
        output_dir=tmp_path / "out",
    )
    assert "<user>Ask about tides as children would." in [prompt_text(p) for p in fake.prompts]
    (row,) = read_rows(tmp_path / "out")
    assert row["seed_id"] == "t" and row["audience"] == "children"


def test_bad_messages_are_dropped_with_reasons(tmp_path, fake):
    def replies(prompt, params):
        text = prompt_text(prompt)
        if "Ask" in text:
            return "The user wants to know about tides." if "tides" in text else "How do I name a cat?"
        return "Call it Smoke."

    fake.responder = replies
    summary = generate(
        **FAKE, instruction=ASKS, prompt_template="Ask {{ seed_instruction }}", output_dir=tmp_path / "out"
    )
    # The statement is drawn three times (the fake repeats itself), then given up.
    assert summary["drops"] == {"write_prompt:not_a_request": 1, "write_prompt:not_a_request:resampled": 2}
    assert [r["instruction"] for r in read_rows(tmp_path / "out")] == ["How do I name a cat?"]


def test_instruction_flag_repeats(tmp_path):
    args = build_parser(generate).parse_args(["--instruction", "a", "--instruction", "b", "c"])
    assert args.instruction == ["a", "b", "c"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--instruction", "x", "--rows", str(ROOT / "data" / "seed_instructions.jsonl")], "not both"),
        (["--rows", str(ROOT / "data" / "seed_contexts.jsonl")], "no 'instruction' column"),
        (["--instruction", "x", "--prompt-template", "nope.jinja"], "No prompt template 'nope.jinja'"),
        (["--instruction", "x", "--prompt-template", "{{ topic }}"], "'topic' is undefined"),
        (["--instruction", "x", "--num-generations", "2", "--temperature", "0"], "--temperature above 0"),
    ],
)
def test_bad_input_ends_in_one_clear_line(args, message, tmp_path, capsys, fake):
    with pytest.raises(SystemExit) as exit_:
        main(generate, ["--backend", "fake", "--output-dir", str(tmp_path / "o"), *args], check_inputs)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert fake.calls == []


NOTEBOOK_DOC = "docs/notebook.md"  # the compose-your-own-flow page; the README links it


def doc_snippet(marker: str, doc: str = NOTEBOOK_DOC) -> str:
    """The python block after `<!-- doc-test: marker -->` in a doc page, so the page cannot rot."""
    text = (ROOT / doc).read_text()
    match = re.search(rf"<!-- doc-test: {marker} -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, f"{doc} has no python block after <!-- doc-test: {marker} -->"
    return match.group(1)


def test_the_documented_pipeline_runs(tmp_path, fake):
    namespace = {"__name__": "notebook_doc"}
    exec(compile(doc_snippet("pipeline"), NOTEBOOK_DOC, "exec"), namespace)
    namespace["haiku"](backend="fake", model="fake", output_dir=str(tmp_path / "haiku"))
    rows = read_rows(tmp_path / "haiku")
    assert [r["topic"] for r in rows] == ["autumn rain", "a lighthouse at night"]
    assert all(r["haiku"] and r["title"] and r["techniques"] == ["haiku", "title"] for r in rows)


@pytest.mark.slow
def test_generate_flow_on_the_embedded_model(tmp_path):
    summary = generate(instruction=ASKS, max_new_tokens=32, output_dir=tmp_path / "out")
    assert summary["rows_per_stage"]["seeds"] == 2 and summary["rows"] > 0
    for row in read_rows(tmp_path / "out"):
        assert row["instruction"].strip() and row["response"].strip()
        assert row["instruction"] != row["seed_instruction"] and row["seed_instruction"] in ASKS
        assert row["model"] == "embedded:SmolLM2-135M-Instruct" and row["backend"] == "transformers"
        assert json.loads(row["generation"])["respond"]["max_new_tokens"] == 32
