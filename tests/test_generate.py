"""Basic prompting: template rendering (files and inline text, strict, sandboxed), the output
mapping that chains steps, several samples per row, and the checks that turn replies into drops.
The task's plain function runs on the fake backend; no Prefect server needed."""

import functools

import pytest

from tasks import notebook
from tasks.backends import Generation, GenerationParams
from tasks.backends.fake import prompt_text
from tasks.data.seeds import SeedError, load_texts
from tasks.generate import build_messages, check_text, generate_text
from tasks.pipeline.caching import batch_key
from tasks.templates import prompts

PARAMS = GenerationParams(max_new_tokens=64, seed=7)


def run(rows, **kwargs):
    kwargs = {"model": "fake", "backend": "fake", "params": PARAMS, **kwargs}
    return generate_text.fn(rows, 0, **kwargs)


@pytest.mark.parametrize(
    "template, is_file",
    [
        ("respond.jinja", True),
        ("generate/write_prompt.jinja", True),
        ("Answer: {{ instruction }}", False),
        ("Write a haiku.", False),
        ("{{ name }}.jinja", False),  # markup: text that happens to end in .jinja
        ("Summarize\nnotes.jinja", False),
    ],
)
def test_file_names_and_inline_templates_are_told_apart(template, is_file):
    assert prompts.is_file(template) is is_file


def test_inline_and_file_templates_render_the_same_way():
    assert prompts.render_template("Q: {{ instruction }}", instruction="Why?") == "Q: Why?"
    assert prompts.render_template("respond.jinja", instruction="Why?") == "Why?"
    assert prompts.render_string("{% include 'respond.jinja' %}!", instruction="Why?") == "Why?!"


@pytest.mark.parametrize("template", ["Tell me about {{ topic }} for {{ audience }}.", "respond.jinja"])
def test_a_missing_variable_is_an_error_naming_it(template):
    with pytest.raises(ValueError, match="audience|instruction"):
        prompts.render_template(template, topic="tides")


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ topic.__class__ }}",
        "{% set x = [] %}{{ x.append(1) }}",  # the immutable sandbox: no mutation either
    ],
)
def test_a_template_reaching_python_internals_fails(template):
    with pytest.raises(ValueError, match="sandbox"):
        prompts.render_string(template, topic="tides")


def test_unknown_files_and_bad_syntax_are_clear_errors():
    with pytest.raises(ValueError, match="No prompt template 'respnd.jinja'.*pass the text itself"):
        prompts.render_template("respnd.jinja", instruction="x")
    with pytest.raises(ValueError, match="not valid Jinja"):
        prompts.render_string("{{ topic ", topic="x")


def test_the_cache_key_covers_the_template_text():
    inputs = {"rows": [{"topic": "tides"}], "template": "respond.jinja"}
    keys = {
        batch_key({**inputs, "template": t}, [t], [])
        for t in ["respond.jinja", "A {{ topic }}", "B {{ topic }}"]
    }
    assert len(keys) == 3
    # A file's key follows its text, including the files it pulls in.
    assert "{{ instruction }}" in prompts.source("respond.jinja")
    assert "{{ instruction }}" in prompts.source("{% include 'respond.jinja' %}")


def test_build_messages_renders_the_row_and_puts_the_system_prompt_first():
    row = {"topic": "tides", "id": "r1"}
    assert build_messages(row, "About {{ topic }}.") == [{"role": "user", "content": "About tides."}]
    messages = build_messages(row, "About {{ topic }}.", system_prompt="Be brief.")
    assert messages[0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize(
    "text, checks, reason",
    [
        ("", ("empty",), "empty"),
        ("🐝🐝🐝", ("empty", "degenerate"), "empty"),
        ("Bees 🐝🐝🐝🐝🐝🐝🐝", ("empty", "degenerate"), "degenerate"),
        ("I'm sorry, I cannot help with that.", ("refusal",), "refusal"),
        ("Bees are insects.", ("not_a_request",), "not_a_request"),
        ("I can't get my bread to rise. What am I doing wrong?", ("not_a_request",), None),
        ("Bees dance to share where flowers are.", ("empty", "degenerate", "refusal"), None),
    ],
)
def test_checks_name_the_reason(text, checks, reason):
    assert check_text(text, checks) == reason


def test_output_mapping_chains_one_step_into_the_next(fake):
    rows = [{"id": "a", "topic": "tides"}, {"id": "b", "topic": "bees"}]
    poems = run(rows, template="Write a haiku about {{ topic }}.", output_column="haiku")
    titled = run(poems["rows"], template="Title this: {{ haiku }}", output_column="title")
    assert [r["id"] for r in titled["rows"]] == ["a", "b"]
    for row in titled["rows"]:
        assert row["haiku"] and row["title"] and row["topic"] in ("tides", "bees")
        assert f"<user>Title this: {row['haiku']}" in [prompt_text(p) for p in fake.prompts]
        assert row["techniques"] == ["haiku", "title"]
        assert row["templates"] == ["Write a haiku about {{ topic }}.", "Title this: {{ haiku }}"]
        assert row["generation"]["title"]["seed"] == 7
        assert row["haiku_truncated"] is False and row["model"] == "fake"


def test_each_generation_uses_its_own_seed_and_becomes_its_own_row(fake):
    out = run(
        [{"id": "a", "topic": "tides"}], template="{{ topic }}", output_column="text", num_generations=3
    )
    assert [p.seed for _, p in fake.calls] == [7, 8, 9]
    assert [r["generation_index"] for r in out["rows"]] == [0, 1, 2]
    assert [r["generation"]["text"]["seed"] for r in out["rows"]] == [7, 8, 9]
    assert len({r["id"] for r in out["rows"]}) == 3 and len({r["text"] for r in out["rows"]}) == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"output_column": "id"}, "reserved for provenance"),
        ({"num_generations": 2, "params": GenerationParams(temperature=0)}, "temperature above 0"),
        ({"checks": ("polite",)}, "Unknown checks"),
        ({"template": "nope.jinja"}, "No prompt template"),
        ({"template": "{{ audience }}"}, "audience"),
    ],
)
def test_bad_configuration_raises_before_anything_is_kept(fake, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run([{"id": "a", "topic": "tides"}], **{"template": "{{ topic }}", "output_column": "text", **kwargs})


def test_bad_replies_are_drops_with_reasons(fake):
    replies = {"tides": "I'm sorry, I can't.", "bees": "Bees 🐝🐝🐝🐝🐝🐝🐝", "moss": "word " * 80}
    fake.responder = lambda prompt, params: replies[prompt_text(prompt).split(">")[-1]]
    rows = [{"id": t, "topic": t} for t in replies]
    out = run(rows, template="{{ topic }}", output_column="text", keep_truncated=False)
    assert out["rows"] == []
    final = [d for d in out["drops"] if not d["reason"].endswith(":resampled")]
    assert {(d["row_id"], d["reason"]) for d in final} == {
        ("tides", "refusal"),
        ("bees", "degenerate"),
        ("moss", "degenerate"),
    }
    # Each row was drawn three times (two draws sampled again) before it was given up.
    assert len(out["drops"]) == 3 * len(rows)
    long_answer = " ".join(f"moss{i}" for i in range(70))  # past max_new_tokens=64
    fake.responder = lambda prompt, params: long_answer
    out = run(rows[2:], template="{{ topic }}", output_column="text", keep_truncated=False)
    assert [d["reason"] for d in out["drops"]] == ["truncated:resampled"] * 2 + ["truncated"]
    kept = run(rows[2:], template="{{ topic }}", output_column="text")
    assert kept["rows"][0]["text_truncated"] is True


def test_a_dropped_reply_is_sampled_again_with_another_seed(fake):
    fake.responder = lambda prompt, params: (
        "I'm sorry, I can't." if params.seed == 7 else "Tides follow the Moon."
    )
    out = run([{"id": "tides", "topic": "tides"}], template="{{ topic }}", output_column="text")
    assert [r["text"] for r in out["rows"]] == ["Tides follow the Moon."]
    assert [(d["reason"], d["text"]) for d in out["drops"]] == [("refusal:resampled", "I'm sorry, I can't.")]
    assert [params.seed for _, params in fake.calls] == [7, 8]


def test_a_greedy_reply_is_not_drawn_again(fake):
    fake.responder = lambda prompt, params: "I'm sorry, I can't."
    rows = [{"id": "tides", "topic": "tides"}]
    out = run(rows, template="{{ topic }}", output_column="text", params=GenerationParams(temperature=0))
    assert [d["reason"] for d in out["drops"]] == ["refusal"] and len(fake.calls) == 1


def test_a_prompt_too_long_for_the_model_is_a_drop(fake, monkeypatch):
    monkeypatch.setattr(fake, "generate", lambda prompts, params: [Generation("", "prompt_too_long")])
    out = run([{"id": "a", "topic": "tides"}], template="{{ topic }}", output_column="text")
    assert out["drops"][0]["reason"] == "prompt_too_long" and out["rows"] == []


def test_responses_are_this_task_with_the_response_template(fake):
    from tasks.respond import generate_responses

    fake.responder = lambda prompt, params: "Because of the Moon."
    out = generate_responses.fn(
        [{"id": "a", "instruction": "Why tides?"}], 0, "fake", "fake", PARAMS, system_prompt="Be brief."
    )
    row = out["rows"][0]
    assert row["response"] == "Because of the Moon." and row["response_truncated"] is False
    assert row["system_prompt"] == "Be brief." and row["techniques"] == ["respond"]
    assert row["templates"] == ["respond.jinja"]
    assert fake.prompts[0][-1] == {"role": "user", "content": "Why tides?"}


def test_a_grounded_answer_with_a_figure_its_passage_never_states_is_drawn_again(fake):
    from tasks.respond import generate_responses

    fake.responder = lambda prompt, params: (
        "The Games took place in London in 1924." if params.seed == 7 else "They were held in London in 1908."
    )
    row = {
        "id": "a",
        "instruction": "When were the London Olympics held?",
        "context": "The 1908 London Games.",
    }
    out = generate_responses.fn([row], 0, "fake", "fake", PARAMS, grounded=True)
    assert [r["response"] for r in out["rows"]] == ["They were held in London in 1908."]
    assert [d["reason"] for d in out["drops"]] == ["unsupported_figure:resampled"]
    fake.responder = lambda prompt, params: "The Games took place in London in 1924."
    plain = generate_responses.fn([row], 0, "fake", "fake", PARAMS)  # not grounded: no passage to hold it to
    assert plain["rows"] and plain["drops"] == []


def test_notebook_functions_take_a_list_of_dicts(fake):
    rows, drops = notebook.generate(
        [{"topic": "tides"}], "Haiku: {{ topic }}", "haiku", backend="fake", model="fake"
    )
    assert rows[0]["haiku"] and rows[0]["id"] and drops == []
    answered, _ = notebook.respond([{"instruction": "Why tides?"}], backend="fake", model="fake")
    assert answered[0]["response"]
    queries, _ = notebook.passage_queries(
        [{"context": "Bees dance to tell each other where flowers are."}], 2, backend="fake", model="fake"
    )
    evolved, _ = notebook.evolve(queries, rounds=1, backend="fake", model="fake")
    assert len(evolved) == len(queries) > 0 and all("lineage" in r for r in evolved)


def test_the_documented_notebook_calls_run(monkeypatch, fake):
    from tests.test_flow_generate import NOTEBOOK_DOC, doc_snippet

    # The page's calls as written, on the fake backend instead of the embedded model.
    for name in ("generate", "respond", "passage_queries", "evolve"):
        monkeypatch.setattr(
            notebook, name, functools.partial(getattr(notebook, name), backend="fake", model="fake")
        )
    namespace = {"__name__": "notebook_doc"}
    exec(compile(doc_snippet("notebook"), NOTEBOOK_DOC, "exec"), namespace)
    assert namespace["rows"][0]["haiku"] and namespace["queries"]
    assert {r["techniques"][0] for r in namespace["queries"]} == {"self_instruct"}
    assert len(fake.calls) >= 2


def test_load_texts_from_the_command_line_and_from_files(tmp_path):
    rows = load_texts(texts=["a question about tides", "a recipe"], name="seed_instruction")
    assert [r["seed_instruction"] for r in rows] == ["a question about tides", "a recipe"]
    assert rows[0]["id"] == rows[0]["seed_id"] == load_texts(texts=["a question about tides"])[0]["id"]
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"id": "t1", "request": "tides", "audience": "kids"}\n')
    assert load_texts(jsonl, "request") == [
        {"audience": "kids", "id": "t1", "seed_id": "t1", "request": "tides"}
    ]
    text = tmp_path / "rows.txt"
    text.write_text("first request\n\nsecond request\n")
    assert [r["topic"] for r in load_texts(text, "topic")] == ["first request", "second request"]
    with pytest.raises(SeedError, match="Pass --column"):
        load_texts(jsonl, "instruction")
    with pytest.raises(SeedError, match="not both"):
        load_texts(jsonl, texts=["x"])


def test_notebook_self_instruct_keeps_its_old_name():
    """Notebooks written before the rename call `notebook.self_instruct`; it is the same function."""
    assert notebook.self_instruct is notebook.passage_queries
