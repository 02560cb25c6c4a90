"""The command line: flags mirror the flow's parameters, bad input ends in one clear line, and a
successful run prints progress and a summary with no traceback or warning."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.instruct import instruct
from tasks.pipeline.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "flows/instruct.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


# The flags users type: a grouped parameter's fields stay flat (--temperature, not --sampling).
FLAGS = (
    "seeds seed-column num-instructions num-evolutions mutations system-prompt ground-responses "
    "near-duplicate-threshold max-rounds model backend prompts temperature response-temperature "
    "max-new-tokens seed batch-size output-dir versioned keep-versions push-to-hub private license"
).split()


def test_help_lists_every_flow_parameter_in_kebab_case():
    parser = build_parser(instruct)
    flags = {o.lstrip("-") for a in parser._actions for o in a.option_strings if o.startswith("--")}
    assert set(FLAGS) <= flags and not {"llm", "sampling", "batching", "output"} & flags
    groups = {n for n, p in instruct.parameters.properties.items() if "$ref" in p}
    assert groups == {"llm", "sampling", "batching", "output"}
    help_text = parser.format_help()
    assert "User queries to write per seed passage" in help_text
    assert "Longest response, in tokens. (default: 256)" in help_text
    assert '(default: "output/instruct")' in help_text  # the flow's default, not the group's


def test_a_grouped_field_takes_the_flows_default_for_the_rest_of_its_group():
    from flows.magpie import magpie

    params = magpie.validate_parameters({"seed": 3, "output": {"versioned": True}})
    assert params["sampling"].temperature == 1.0 and params["sampling"].seed == 3  # magpie samples at 1.0
    assert params["output"].output_dir == Path("output/magpie") and params["output"].versioned
    help_text = build_parser(magpie).format_help()
    assert "(default: 1.0)" in help_text and '(default: "output/magpie")' in help_text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "missing.jsonl"], "Seed file 'missing.jsonl' does not exist"),
        (["--num-instructions", "0"], "error: argument --num-instructions: must be greater than 0, got 0."),
        (["--num-evolutions", "-1"], "error: argument --num-evolutions: must be at least 0, got -1."),
        (["--output-dir", "pyproject.toml"], "is a file. Pass a directory path"),
        (["--backend", "transformers", "--model", "no-such-org/no-such-model"], "not a local directory"),
        (["--mutations", "shuffle"], "invalid choice: 'shuffle'"),
    ],
)
def test_bad_input_ends_in_a_clear_error_before_any_run(args, message, tmp_path):
    args = ["--backend", "fake", *args] if "--backend" not in args else args
    result = run_cli(*args, env={"PREFECT_HOME": str(tmp_path)}, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "prefect.db").exists()  # no Prefect run was even started


@pytest.mark.long
def test_a_successful_run_is_clean(tmp_path):
    env = {"PREFECT_HOME": str(tmp_path / "home")}
    out = tmp_path / "out"
    result = run_cli("--backend", "fake", "--num-evolutions", "1", "--output-dir", str(out), env=env)
    console = result.stdout + result.stderr
    assert result.returncode == 0, console
    noises = (
        "Traceback",
        "Warning",
        "WARNING",
        "ERROR",
        "database is locked",
        "CancelledError",
        "Running hook",
    )
    for noise in noises:
        assert noise not in console
    assert "Task run 'self_instruct[0]' - Finished in state Completed()" in console
    assert f"Dataset: {out}" in console and (out / "dataset" / "dataset_info.json").exists()


def test_a_flow_started_from_another_directory_takes_the_projects_prefect_settings(tmp_path):
    # Prefect reads prefect.toml from the working directory only; the CLI applies ours elsewhere.
    code = (
        "from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as timeout\n"
        "from tasks.pipeline.settings import project_settings\n"
        "print(timeout.value())\n"
        "with project_settings():\n"
        "    print(timeout.value())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_SERVER_")}
    env["PYTHONPATH"] = str(ROOT)
    elsewhere = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    here = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    before, during = elsewhere.stdout.split()
    assert before != "300" and during == "300", elsewhere.stderr  # Prefect's default, then ours
    assert here.stdout.split() == ["300", "300"], here.stderr


@pytest.mark.usefixtures("prefect_server")
def test_the_run_reuses_the_inputs_the_cli_checked(tmp_path, monkeypatch, fake):
    import flows.instruct
    from tasks.pipeline.cli import main

    calls = []

    def counted(**parameters):
        calls.append(parameters)
        return check_inputs(**parameters)

    check_inputs = flows.instruct.check_inputs
    monkeypatch.setattr(flows.instruct, "check_inputs", counted)  # what the flow body calls
    args = ["--backend", "fake", "--num-instructions", "1", "--num-evolutions", "0"]
    main(instruct, [*args, "--output-dir", str(tmp_path / "out")], counted)
    assert len(calls) == 1  # the seeds are read, the model loaded, the Hub asked once
    instruct(backend="fake", model="fake", num_instructions=1, num_evolutions=0, output_dir=tmp_path / "py")
    assert len(calls) == 2  # a run the CLI did not check checks itself
