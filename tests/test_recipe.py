"""A run's recipe beside its data, and `--recipe` to rerun it from a file, a directory or the Hub."""

import inspect
import json

import pytest

from flows.instruct import check_inputs, instruct
from tasks.data.recipe import RecipeError, load_recipe, rerun_parameters
from tasks.pipeline.cli import main
from tasks.pipeline.parameters import flat
from tasks.templates import prompts
from tasks.templates.prompt_overrides import load_overrides
from tests.hub_server import FakeHub

pytestmark = pytest.mark.usefixtures("prefect_server")

ARGS = ["--backend", "fake", "--model", "fake", "--num-instructions", "2", "--seed", "3"]


def rows(directory):
    return [json.loads(line) for line in (directory / "data.jsonl").read_text().splitlines()]


def test_a_dataset_holds_the_recipe_of_its_run(tmp_path, fake):
    instruct(backend="fake", model="fake", num_instructions=2, output_dir=tmp_path / "out")
    recipe = json.loads((tmp_path / "out" / "recipe.json").read_text())
    assert recipe["flow"] == "instruct" and (recipe["model"], recipe["backend"]) == ("fake", "fake")
    defaults = {name: p.default for name, p in inspect.signature(instruct.fn).parameters.items()}
    assert set(recipe["parameters"]) == set(flat(defaults))  # a group's fields by name, as flags name them
    assert recipe["parameters"]["num_instructions"] == 2
    assert recipe["prompts"]["respond.jinja"] == prompts.source("respond.jinja")
    assert set(recipe["prompts"]) == set(prompts.shipped()) and recipe["instructforge_version"] != ""
    assert str(tmp_path) not in (tmp_path / "out" / "recipe.json").read_text()


def test_a_pushed_run_reruns_from_the_hub_with_the_same_rows(tmp_path, monkeypatch, capsys, fake):
    with FakeHub({}, {"hf_write": {"name": "me"}}) as hub:
        monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", hub.url)
        template = hub.url + "/{repo_id}/resolve/{revision}/{filename}"  # as HF_ENDPOINT sets it at import
        monkeypatch.setattr("huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("HF_TOKEN", "hf_write")
        main(
            instruct,
            [*ARGS, "--output-dir", str(tmp_path / "first"), "--push-to-hub", "me/data"],
            check_inputs,
        )
        assert "recipe.json" in hub.repos["me/data"]
        main(instruct, ["--recipe", "me/data", "--output-dir", str(tmp_path / "again")], check_inputs)
    assert rows(tmp_path / "again") == rows(tmp_path / "first")
    rerun = json.loads((tmp_path / "again" / "recipe.json").read_text())
    first = json.loads((tmp_path / "first" / "recipe.json").read_text())
    assert {k: v for k, v in rerun["parameters"].items() if k not in ("output_dir", "push_to_hub")} == {
        k: v for k, v in first["parameters"].items() if k not in ("output_dir", "push_to_hub")
    }


def test_flags_beside_the_recipe_override_it(tmp_path, fake):
    instruct(backend="fake", model="fake", num_instructions=2, seed=3, output_dir=tmp_path / "first")
    main(instruct, ["--recipe", str(tmp_path / "first"), "--seed", "4", "--output-dir", str(tmp_path / "b")])
    parameters = json.loads((tmp_path / "b" / "recipe.json").read_text())["parameters"]
    assert parameters["seed"] == 4 and parameters["num_instructions"] == 2


def test_a_changed_template_in_the_recipe_is_rendered_as_an_override(tmp_path):
    text = prompts.source("respond.jinja") + "\nAnswer in one paragraph.\n"
    recipe = {
        "flow": "instruct",
        "parameters": {"seed": 1, "output_dir": "x"},
        "prompts": {"respond.jinja": text},
    }
    params = rerun_parameters(recipe, "instruct")
    assert "output_dir" not in params and params["seed"] == 1
    assert load_overrides(params["prompts"]) == {"respond.jinja": text}


def test_a_recipe_for_another_flow_or_no_recipe_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "recipe.json").write_text(json.dumps({"flow": "magpie", "parameters": {}}))
    with pytest.raises(SystemExit):
        main(instruct, ["--recipe", str(tmp_path / "recipe.json")])
    assert "run python flows/magpie.py --recipe" in capsys.readouterr().err
    with pytest.raises(RecipeError, match="cannot read a recipe"):
        load_recipe(str(tmp_path / "missing.json"))
