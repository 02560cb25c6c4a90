"""A command line for any flow, built from the flow's own parameter schema (the one Prefect shows
in its UI), so flags mirror the parameters in kebab-case and never drift from them. A grouped
parameter (tasks/pipeline/parameters.py) gives one flag per field, flat: `--temperature`, not
`--sampling`; its default is the flow's."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema

from tasks.data import recipe
from tasks.data.dataset import OutputDirError
from tasks.data.seeds import SeedError
from tasks.pipeline import plan, usage
from tasks.pipeline.parameters import checked, flat
from tasks.pipeline.runners import with_task_runner
from tasks.pipeline.server import local_server, with_run_hygiene
from tasks.pipeline.settings import project_settings

_TYPES = {"integer": int, "number": float, "string": str}
_BOUNDS = (
    ("exclusiveMinimum", "greater than", lambda v, b: v > b),
    ("minimum", "at least", lambda v, b: v >= b),
    ("exclusiveMaximum", "less than", lambda v, b: v < b),
    ("maximum", "at most", lambda v, b: v <= b),
)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported on one line (the flag, the problem, the fix)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message}. See --help.", file=sys.stderr)
        raise SystemExit(2)


def _value_type(kind: dict[str, Any]) -> Callable[[str], Any] | None:
    """The flag's converter: its JSON-schema type, checked against the schema's range, so a value
    out of range is refused by the parser with the flag's name and the allowed range."""
    convert = _TYPES.get(kind.get("type"))
    bounds = [(word, test, kind[key]) for key, word, test in _BOUNDS if key in kind]
    if convert is None or not bounds:
        return convert

    def checked(text: str) -> Any:
        value = convert(text)
        if not all(test(value, bound) for _, test, bound in bounds):
            allowed = " and ".join(f"{word} {bound}" for word, _, bound in bounds)
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    checked.__name__ = convert.__name__  # argparse names the type in "invalid int value"
    return checked


def _kind(prop: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an optional parameter's schema."""
    options = [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
    return {**prop, **options[0]} if options else prop


def _fields(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any], str | None]]:
    """Every flag's (name, schema, group title): a parameter's own, or each field of a grouped
    parameter, with the parameter's default for it and the group's description as its title."""
    out = []
    for name, prop in schema["properties"].items():
        ref = prop.get("$ref", "").rsplit("/", 1)[-1]
        group = schema.get("definitions", {}).get(ref)
        if group is None:
            out.append((name, prop, None))
            continue
        title = group.get("description", name).rstrip(".")
        title = title[:1].lower() + title[1:]
        for field, sub in group["properties"].items():
            default = prop.get("default", {}).get(field, sub.get("default"))
            out.append((field, {**sub, "default": default}, title))
    return out


def build_parser(flow: Flow) -> argparse.ArgumentParser:
    schema = parameter_schema(flow.fn).model_dump()
    parser = _Parser(
        description=(flow.description or "").split("\n\n")[0],
        argument_default=argparse.SUPPRESS,  # only flags given on the command line are passed
    )
    sections: dict[str | None, Any] = {None: parser}
    for name, prop, title in _fields(schema):
        if title not in sections:
            sections[title] = parser.add_argument_group(title)
        section = sections[title]
        kind = _kind(prop)
        default = prop.get("default")
        help_text = f"{prop.get('description', '')} (default: {json.dumps(default)})"
        flag = "--" + name.replace("_", "-")
        if kind.get("type") == "boolean":
            section.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, help=help_text)
        elif kind.get("type") == "array":
            items = kind.get("items", {})
            section.add_argument(  # `--x a b` and `--x a --x b` both give [a, b]
                flag,
                dest=name,
                action="extend",
                nargs="+",
                choices=items.get("enum"),
                type=_TYPES.get(items.get("type"), str),
                help=help_text,
            )
        else:
            section.add_argument(
                flag,
                dest=name,
                choices=kind.get("enum"),
                type=_value_type(kind) or str,
                help=help_text,
            )
    parser.add_argument(
        "--recipe",
        help="Rerun a pushed run: a recipe.json, a dataset directory or a Hub dataset id; flags given "
        "beside it override its parameters.",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="Print the plan (stages, batches, prompts) and an estimate of tokens and time from a short "
        "calibration on the chosen backend, then stop: nothing is generated or written.",
    )
    scale = parser.add_argument_group("where tasks run (default: threads in this process)")
    scale.add_argument("--dask-address", help="Run the tasks on the Dask cluster at this scheduler address.")
    scale.add_argument(
        "--dask-workers", type=int, help="Run the tasks on a new local Dask cluster of N workers."
    )
    return parser


def print_summary(result: dict[str, Any]) -> None:
    print(f"\n{result['rows']} rows")
    for stage, count in result.get("rows_per_stage", {}).items():
        print(f"  {stage:<16} {count}")
    if result.get("drops"):
        print("Dropped, by stage and reason (details in drops.jsonl):")
        for reason, count in result["drops"].items():
            print(f"  {reason:<36} {count}")
    if tokens := usage.console(result.get("usage", {})):
        print(tokens)
    if result.get("failures"):
        print(
            f"Failed with errors: {result['failures']} rows (failures.jsonl). "
            "Run the same command again to retry them; everything else comes from the cache."
        )
    # Last, so it is what the run leaves on screen: where the data went.
    print(f"Dataset: {Path(result['output_dir']).resolve()}")
    if result.get("hub_url"):
        print(f"On the Hub: {result['hub_url']}")


def _fail(err: Exception) -> None:
    # One line, even when a library's message (pydantic's, transformers') spans several.
    print("error: " + " ".join(str(err).split()), file=sys.stderr)
    raise SystemExit(2) from None


def main(
    flow: Flow, argv: list[str] | None = None, preflight: Callable[..., Any] | None = None
) -> dict[str, Any]:
    """Parse flags, validate them and run `preflight` (the flow's input checks, called with every
    parameter) before the flow starts, so bad input ends with one clear line instead of a failed
    run's traceback; the run reuses what it returned (tasks/pipeline/parameters.py `inputs`)."""
    args = vars(build_parser(flow).parse_args(argv))
    runner = {k: args.pop(k) for k in ("dask_address", "dask_workers") if k in args}
    dry_run, source = args.pop("dry_run", False), args.pop("recipe", None)
    with project_settings():
        try:
            if source:  # the recipe's parameters, under the flags given beside it
                args = {**recipe.rerun_parameters(recipe.load_recipe(source), flow.name), **args}
            flow = with_task_runner(flow, **runner)
            params = flow.validate_parameters(args)  # every parameter, groups whole
            inputs = checked(preflight, params) if preflight else None
            lines = _plan(flow.name, flat(params), inputs, fresh=dry_run)
        except (ParameterTypeError, SeedError, OutputDirError, ValueError) as err:
            _fail(err)
        print("\n".join(lines), flush=True)
        if dry_run:
            print("Dry run: nothing was generated or written.")
            return {"plan": lines}
        with local_server():  # a running `prefect server start`, else Prefect's temporary server
            state = with_run_hygiene(flow)(**args, return_state=True)
    result = state.result(raise_on_failure=False)
    if not isinstance(result, dict):
        state.result()  # the flow's own error, raised as a direct call would
    print_summary(result)
    if result.get("hub_error"):
        _fail_push(result)
    if result.get("kept_previous") or not result.get("rows"):
        _fail_empty(result)
    return result


def _plan(flow: str, params: dict[str, Any], inputs: Any, fresh: bool) -> list[str]:
    """The run's plan and estimate (pipeline/plan.py); a backend that fails its calibration is bad input."""
    if flow not in plan.PLANNERS:
        return []
    try:
        return plan.describe(flow, params, len(inputs) if isinstance(inputs, list) else 0, fresh)
    except Exception as err:  # the backend's own error (a server down, a model that will not run)
        raise ValueError(f"the {params['backend']} backend failed a short calibration run: {err}") from None


def _fail_push(result: dict[str, Any]) -> None:
    """The Hub refused the push at the end of the run: the data is saved; say so on one line."""
    reason, saved = result["hub_error"].rstrip("."), Path(result["output_dir"]).resolve()
    print(
        f"error: {reason}. The dataset is saved in {saved}; "
        "run the same command again to push it (the rows come from the cache).",
        file=sys.stderr,
    )
    raise SystemExit(1)


def _fail_empty(result: dict[str, Any]) -> None:
    """A run that produced no rows, or too few to replace the previous dataset, exits 1."""
    if result.get("kept_previous"):
        print(
            f"error: the previous dataset in {result['kept_previous']} has many more rows, so it was "
            f"kept; this run's {result['rows']} rows are in {result['output_dir']} (see its drops.jsonl).",
            file=sys.stderr,
        )
    else:
        print(
            "error: this run produced no rows; every row was dropped or failed (see drops.jsonl and "
            "failures.jsonl in the dataset directory for the reasons).",
            file=sys.stderr,
        )
    raise SystemExit(1)
