"""A run's recipe, pushed beside its data (as distilabel pushes its pipeline) so that anyone can
rerun it: the flow, every parameter, the model and backend ids, the text of every prompt template
the project ships (with the run's `--prompts` overrides in place), and the project's version.

`python flows/<flow>.py --recipe <file, dataset directory or Hub dataset id>` reruns it: the
recipe's parameters, with any flag given beside `--recipe` taking precedence. Where a template's
text differs from this checkout's (an override, or a project version that changed it), the
recipe's text is used, through the same mechanism as `--prompts`. Local paths in a recipe are cut
to their names (nothing pushed holds a local path); the output directory and the push target are
left to the rerun.
"""

from __future__ import annotations

import json
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from tasks.data.card import public
from tasks.templates import prompts

RECIPE = "recipe.json"
NOT_RERUN = ("output_dir", "push_to_hub", "prompts")  # where the rerun writes is the rerunner's


class RecipeError(ValueError):
    """A recipe that cannot be read or does not fit the flow; the message says what to do."""


def version() -> str:
    try:
        return metadata.version("instructforge")
    except metadata.PackageNotFoundError:  # a checkout run without `pip install -e .`
        return "unknown"


def build_recipe(flow: str, parameters: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    """The recipe of a run of `flow` with `parameters` that rendered with `overrides`."""
    texts = {name: overrides.get(name) or prompts.source(name) for name in prompts.shipped()}
    return {
        "flow": flow,
        "parameters": json.loads(json.dumps(public(parameters), default=str)),
        "model": parameters.get("model"),
        "backend": parameters.get("backend"),
        "prompts": texts,
        "instructforge_version": version(),
    }


def write_recipe(directory: Path, recipe: dict[str, Any]) -> None:
    (Path(directory) / RECIPE).write_text(
        json.dumps(recipe, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def load_recipe(source: str) -> dict[str, Any]:
    """The recipe in a file, in a dataset directory, or in a Hub dataset repo."""
    path = Path(source)
    if path.is_dir():
        path = path / RECIPE
    if not path.exists() and source.count("/") == 1 and not source.endswith(".json"):
        path = _download(source)
    try:
        recipe = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RecipeError(
            f"--recipe {source}: cannot read a recipe ({err}). Pass a recipe.json file, "
            "a dataset directory holding one, or a Hub dataset id."
        ) from None
    if not isinstance(recipe, dict) or not {"flow", "parameters"} <= set(recipe):
        raise RecipeError(f"--recipe {source}: not a recipe (no flow and parameters in it).")
    return recipe


def _download(repo_id: str) -> Path:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return Path(HfApi().hf_hub_download(repo_id, RECIPE, repo_type="dataset"))
    except (HfHubHTTPError, OSError) as err:
        raise RecipeError(
            f"--recipe {repo_id}: no {RECIPE} in that Hub dataset ({' '.join(str(err).split())[:200]})."
        ) from None


def rerun_parameters(recipe: dict[str, Any], flow: str) -> dict[str, Any]:
    """The flow parameters that rerun `recipe`, its changed templates written where `prompts`
    points (a temporary directory that lasts as long as the process)."""
    if recipe["flow"] != flow:
        raise RecipeError(
            f"The recipe is for the {recipe['flow']} flow: run python flows/{recipe['flow']}.py --recipe ..."
        )
    params = {k: v for k, v in recipe["parameters"].items() if k not in NOT_RERUN}
    changed = {
        n: t
        for n, t in recipe.get("prompts", {}).items()
        if n in prompts.shipped() and t != prompts.source(n)
    }
    if changed:
        root = Path(tempfile.mkdtemp(prefix="instructforge-recipe-"))
        for name, text in changed.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text, encoding="utf-8")
        params["prompts"] = str(root)
    return params
