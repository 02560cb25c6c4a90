"""`--prompts DIR`: templates that shadow the shipped ones by name. Checked before any model call,
they reach the model in every flow and on Dask workers, key the cache of exactly the stages that
render them, and are recorded in each row's provenance, the summary and the card."""

import json
import re

import pytest
from jinja2 import meta
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from flows.generate import check_inputs as generate_inputs
from flows.generate import generate
from flows.instruct import check_inputs, instruct
from flows.magpie import check_inputs as magpie_inputs
from flows.magpie import magpie
from flows.self_instruct import check_inputs as self_instruct_inputs
from flows.self_instruct import self_instruct
from tasks.backends.fake import prompt_text
from tasks.pipeline.caching import batch_key
from tasks.pipeline.cli import main
from tasks.pipeline.runners import with_task_runner
from tasks.templates import prompts
from tasks.templates.prompt_overrides import VARIABLES, PromptsError, _uses, load_overrides

SMALL = {"backend": "fake", "model": "fake", "num_instructions": 3, "num_evolutions": 1}
# respond.jinja answers without the passage (grounded answers use respond_grounded.jinja)
UNGROUNDED = {**SMALL, "ground_responses": False}
BRIEF = "Answer in one short paragraph.\n\n{{ instruction }}\n"


def prompt_dir(tmp_path, name="prompts", **files):
    """A --prompts directory; keyword `evol_instruct__deepening_jinja` is `evol_instruct/deepening.jinja`."""
    root = tmp_path / name
    root.mkdir(exist_ok=True)
    for key, text in files.items():
        path = root / key.replace("__", "/").replace("_jinja", ".jinja")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


def read_rows(path):
    return [json.loads(line) for line in open(path / "data.jsonl")]


def sent(fake) -> list[str]:
    return [prompt_text(p) for prompts_, _ in fake.calls for p in prompts_]


# --- the table and the checks -------------------------------------------------------------------


def test_the_variable_table_names_every_shipped_template_and_what_it_uses():
    assert sorted(VARIABLES) == prompts.shipped()
    env = prompts.environment()
    for name in prompts.shipped():
        text = (prompts.PROMPTS_DIR / name).read_text()
        assert meta.find_undeclared_variables(env.parse(text)) <= VARIABLES[name], name
        assert _uses(env, name) == VARIABLES[name], name  # itself or through the base it extends


def test_the_prompts_readme_lists_the_same_variables():
    table = {}
    for line in (prompts.PROMPTS_DIR / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| `") and cells[0].endswith(".jinja`"):
            variables = cells[2].split("(")[0]  # "`instructions` (the in-context examples)"
            table[cells[0].strip("`")] = frozenset(re.findall(r"`(\w+)`", variables))
    assert table == VARIABLES


BAD = {
    "a variable the technique does not pass": (
        {"respond_jinja": "Using {{ context }}: {{ instruction }}"},
        "respond.jinja uses context, which its technique does not pass (variables given to "
        "respond.jinja: instruction)",
    ),
    "a variable in a mutation's block": (
        {
            "evol_instruct__deepening_jinja": '{% extends "evol_instruct/_in_depth.jinja" %}'
            "{% block method %}{{ topic }}{% endblock %}"
        },
        "evol_instruct/deepening.jinja uses topic",
    ),
    "a passed variable never used": (
        {"respond_jinja": "Answer the question."},
        "respond.jinja never uses instruction, which its technique passes (so the prompt would ignore "
        "it). Add {{ instruction }}",
    ),
    "a base that drops the variable": (
        {"evol_instruct___in_depth_jinja": "Rewrite it harder. {% block method %}{% endblock %}"},
        "evol_instruct/_in_depth.jinja never uses instruction",
    ),
    "a name that matches no template": (
        {"respnd_jinja": "{{ instruction }}"},
        "respnd.jinja matches no shipped template (did you mean respond.jinja?",
    ),
    "a file at the wrong depth": ({"deepening_jinja": "{{ instruction }}"}, "deepening.jinja matches no"),
    "invalid Jinja": (
        {"respond_jinja": "line one\n{{ instruction "},
        "respond.jinja line 2 is not valid Jinja",
    ),
    "an unknown filter": ({"respond_jinja": "{{ instruction | shout }}"}, "No filter named 'shout'"),
    "a failing render": (
        {"respond_jinja": "{{ instruction.words.count }}"},
        "respond.jinja fails a trial render",
    ),
    "a missing include": (
        {"evol_instruct___in_depth_jinja": '{% include "mine.jinja" %}{{ instruction }}'},
        "refers to mine.jinja, which is neither shipped nor in",
    ),
    "not UTF-8": ({"respond_jinja": b"caf\xe9 {{ instruction }}"}, "respond.jinja is not UTF-8 text"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_override_is_refused_with_its_reason(case, tmp_path):
    files, message = BAD[case]
    with pytest.raises(PromptsError) as err:
        load_overrides(prompt_dir(tmp_path, **files))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_or_empty_directory_is_refused(tmp_path):
    with pytest.raises(PromptsError, match="is not a directory"):
        load_overrides(tmp_path / "nope")
    with pytest.raises(PromptsError, match="holds no .jinja templates"):
        load_overrides(prompt_dir(tmp_path, README_md="notes"))


def test_a_copy_of_the_shipped_prompts_overrides_only_what_was_edited(tmp_path):
    root = tmp_path / "copy"
    root.mkdir()
    for name in prompts.shipped():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text((prompts.PROMPTS_DIR / name).read_text())
    (root / "README.md").write_text("not a template: ignored")
    (root / "respond.jinja").write_text(BRIEF)
    assert load_overrides(root) == {"respond.jinja": BRIEF}
    assert load_overrides(None) == {}


# --- rendering and keys -------------------------------------------------------------------------


def test_an_override_renders_only_inside_its_block_and_is_labelled():
    with prompts.overriding({"respond.jinja": BRIEF}):
        assert prompts.render("respond.jinja", instruction="Hi?") == "Answer in one short paragraph.\n\nHi?"
        assert prompts.label("respond.jinja").startswith("respond.jinja@override:")
        assert prompts.label("self_instruct.jinja") == "self_instruct.jinja"
        with prompts.overriding(None):  # a nested task given none inherits
            assert prompts.render("respond.jinja", instruction="Hi?").startswith("Answer in one")
        with prompts.overriding({}):  # an empty set means the shipped templates
            assert prompts.render("respond.jinja", instruction="Hi?") == "Hi?"
    assert prompts.render("respond.jinja", instruction="Hi?") == "Hi?"
    assert prompts.label("respond.jinja") == "respond.jinja"


def test_the_cache_key_changes_for_overridden_templates_only():
    def key(template, overrides):
        return batch_key({"rows": [], "prompt_overrides": overrides}, [template], [])

    base = {
        "evol_instruct/_in_depth.jinja": "Rewrite, harder: {% block method %}{% endblock %}{{ instruction }}"
    }
    assert key("respond.jinja", {"respond.jinja": BRIEF}) != key("respond.jinja", None)
    assert key("respond.jinja", {"respond.jinja": BRIEF}) != key(
        "respond.jinja", {"respond.jinja": BRIEF + "!"}
    )
    assert key("self_instruct.jinja", {"respond.jinja": BRIEF}) == key("self_instruct.jinja", None)
    # a mutation extends the in-depth base: overriding the base changes the mutation's prompt
    assert key("evol_instruct/deepening.jinja", base) != key("evol_instruct/deepening.jinja", None)
    assert key("evol_instruct/breadth.jinja", base) == key("evol_instruct/breadth.jinja", None)


def test_notebook_calls_render_with_the_overrides_around_them(tmp_path, fake):
    from tasks import notebook

    with prompts.overriding(load_overrides(prompt_dir(tmp_path, respond_jinja=BRIEF))):
        rows, _ = notebook.respond([{"instruction": "Why is the sea salty?"}], model="fake", backend="fake")
    assert sent(fake) == ["<user>Answer in one short paragraph.\n\nWhy is the sea salty?"]
    assert rows[0]["templates"][-1].startswith("respond.jinja@override:")


# --- bad input on the command line --------------------------------------------------------------

FLOWS = {
    "instruct": (instruct, check_inputs),
    "magpie": (magpie, magpie_inputs),
    "self_instruct": (self_instruct, self_instruct_inputs),
    "generate": (generate, generate_inputs),
}


@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize(
    "files, message",
    [
        (
            {"respond_jinja": "{{ context }} {{ instruction }}"},
            "uses context, which its technique does not pass",
        ),
        ({"respons_jinja": "{{ instruction }}"}, "matches no shipped template (did you mean respond.jinja?"),
    ],
    ids=["missing variable", "unknown name"],
)
def test_a_bad_prompts_dir_stops_every_flow_before_any_model_call(
    flow, files, message, tmp_path, capsys, fake
):
    args = ["--backend", "fake", "--model", "fake", "--output-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main(
            FLOWS[flow][0], [*args, "--prompts", str(prompt_dir(tmp_path, **files))], preflight=FLOWS[flow][1]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert fake.calls == [] and not (tmp_path / "out").exists()


# --- flows --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("prefect_server")
def test_an_override_reaches_the_model_keys_the_cache_and_is_recorded(tmp_path, fake):
    instruct(**UNGROUNDED, output_dir=tmp_path / "shipped")
    fake.calls.clear()

    brief = prompt_dir(tmp_path, "brief", respond_jinja=BRIEF)
    summary = instruct(**UNGROUNDED, prompts=brief, output_dir=tmp_path / "brief-out")
    # only the response stage renders respond.jinja: SelfInstruct and EvolInstruct come from the cache
    assert fake.calls and all(text.startswith("<user>Answer in one short paragraph.") for text in sent(fake))
    rows = read_rows(tmp_path / "brief-out")
    assert len(fake.calls[0][0]) == len(rows) == summary["rows"]
    label = rows[0]["templates"][-1]
    assert label.startswith("respond.jinja@override:") and all(r["templates"][-1] == label for r in rows)
    assert summary["prompt_overrides"]["respond.jinja"]["text"] == BRIEF
    card = (tmp_path / "brief-out" / "README.md").read_text()
    assert f"`{label}`" in card and "Answer in one short paragraph." in card
    assert json.loads((tmp_path / "brief-out" / "summary.json").read_text())["prompt_overrides"]
    assert "Answer in one short paragraph." not in (tmp_path / "shipped" / "README.md").read_text()

    fake.calls.clear()  # the same override again: everything from the cache
    instruct(**UNGROUNDED, prompts=brief, output_dir=tmp_path / "again")
    assert fake.calls == [] and read_rows(tmp_path / "again") == rows

    (brief / "respond.jinja").write_text("Answer in one word.\n\n{{ instruction }}")  # edited: recomputed
    instruct(**UNGROUNDED, prompts=brief, output_dir=tmp_path / "edited")
    assert fake.calls and all(text.startswith("<user>Answer in one word.") for text in sent(fake))


@pytest.mark.usefixtures("prefect_server")
def test_every_flow_sends_its_overridden_template(tmp_path, fake):
    tasks = prompt_dir(
        tmp_path,
        "boot",
        self_instruct__bootstrap_jinja="List new tasks like these:\n"
        "{% for i in instructions %}Task {{ loop.index }}: {{ i }}\n{% endfor %}Task 9:",
    )
    self_instruct(
        backend="fake",
        model="fake",
        num_instructions=4,
        max_rounds=2,
        prompts=tasks,
        output_dir=tmp_path / "si",
    )
    assert any(text.startswith("List new tasks like these:") for text in sent(fake))

    fake.calls.clear()
    system = prompt_dir(tmp_path, "mp", magpie__multi_turn_system_jinja="You are a terse tutor.")
    magpie(
        backend="fake",
        model="fake",
        num_rows=2,
        n_turns=2,
        include_system_prompt=True,
        prompts=system,
        output_dir=tmp_path / "mp-out",
    )
    assert all(r["system_prompt"] == "You are a terse tutor." for r in read_rows(tmp_path / "mp-out"))
    assert any("You are a terse tutor." in text for text in sent(fake))

    fake.calls.clear()
    write = prompt_dir(tmp_path, "gen", generate__write_prompt_jinja="Ask about {{ seed_instruction }}.")
    generate(backend="fake", model="fake", instruction=["tides"], prompts=write, output_dir=tmp_path / "g")
    assert "<user>Ask about tides." in sent(fake)


@pytest.mark.usefixtures("prefect_server")
def test_dask_workers_render_with_the_override(tmp_path, fake):
    brief = prompt_dir(tmp_path, "brief", respond_jinja=BRIEF)
    instruct(**UNGROUNDED, prompts=brief, output_dir=tmp_path / "threads")
    fake.calls.clear()
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / "dask-results"}):
        with_task_runner(instruct, dask_workers=2)(**UNGROUNDED, prompts=brief, output_dir=tmp_path / "dask")
    assert fake.calls == []  # every model call happened in a worker process
    assert read_rows(tmp_path / "dask") == read_rows(tmp_path / "threads")
    assert read_rows(tmp_path / "dask")[0]["templates"][-1].startswith("respond.jinja@override:")
