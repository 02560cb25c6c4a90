"""`--dry-run`: the plan (stages, batches, prompts) and an estimate of tokens and time from a short
calibration on the chosen backend, with nothing generated or written; a real run prints the same
plan first."""

import importlib

import pytest

from tasks.pipeline import plan
from tasks.pipeline.cli import main

pytestmark = pytest.mark.usefixtures("prefect_server")

BASE = ["--backend", "fake", "--model", "fake"]


def run_cli(flow_name, argv, capsys):
    module = importlib.import_module(f"flows.{flow_name}")
    result = main(getattr(module, flow_name), argv, module.check_inputs)
    return result, capsys.readouterr().out


def test_a_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys, fake):
    argv = [*BASE, "--num-instructions", "2", "--batch-size", "4", "--output-dir", str(tmp_path / "out")]
    result, out = run_cli("instruct", [*argv, "--dry-run"], capsys)
    lines = out.strip().splitlines()
    assert lines[0] == "Plan for instruct (fake: fake), first round:"
    # six shipped passages, two queries each, batches of four
    assert lines[1].split() == ["self_instruct", "6", "prompts", "2", "batches"]
    assert lines[2].split() == ["evol_instruct", "round", "1", "12", "prompts", "3", "batches"]
    assert lines[3].split() == ["respond", "12", "prompts", "3", "batches"]
    assert lines[4].startswith("Estimate: 30 prompts, up to 6,528 completion tokens; at most ")
    assert lines[-1] == "Dry run: nothing was generated or written."
    assert not (tmp_path / "out").exists() and result == {"plan": lines[:-1]}
    assert fake.prompts == plan.calibration_prompts(4)  # the calibration batch, no prompt of the run


def test_the_estimate_is_the_token_bound_at_the_calibrated_rate(tmp_path, capsys, monkeypatch, fake):
    monkeypatch.setattr(plan, "calibrate", lambda backend, model, batch_size: 100.0)
    argv = [*BASE, "--num-instructions", "2", "--output-dir", str(tmp_path / "out"), "--dry-run"]
    _, out = run_cli("instruct", argv, capsys)
    # 6 x 256 + 12 x 160 + 12 x 256 = 6,528 tokens at 100 tokens/s
    assert "at most 1 min 5 s at 100 tokens/s" in out


@pytest.mark.parametrize(
    ("flow_name", "argv", "stages"),
    [
        ("magpie", ["--num-rows", "8"], ["magpie (user turns)", "magpie (responses)"]),
        ("self_instruct", ["--num-instructions", "16"], ["bootstrap", "respond"]),
        ("generate", [], ["write_prompt", "respond"]),
    ],
)
def test_every_flow_has_a_dry_run(tmp_path, capsys, fake, flow_name, argv, stages):
    _, out = run_cli(flow_name, [*BASE, *argv, "--output-dir", str(tmp_path / "out"), "--dry-run"], capsys)
    shown = [line.strip() for line in out.splitlines()]
    assert shown[0].startswith(f"Plan for {flow_name} ")
    for stage in stages:
        assert any(line.startswith(stage) for line in shown), (stage, out)
    assert not (tmp_path / "out").exists()


def test_a_real_run_prints_the_plan_first(tmp_path, capsys, fake):
    argv = [*BASE, "--num-instructions", "2", "--output-dir", str(tmp_path / "out")]
    _, out = run_cli("instruct", argv, capsys)
    lines = out.strip().splitlines()
    assert lines[0].startswith("Plan for instruct") and lines[-1].startswith("Dataset: ")
    assert (tmp_path / "out" / "README.md").exists()


def test_a_backend_that_fails_its_calibration_is_one_error_line(tmp_path, capsys, fake):
    fake.responder = lambda prompt, params: (_ for _ in ()).throw(ConnectionError("server down"))
    with pytest.raises(SystemExit) as exit_:
        run_cli("instruct", [*BASE, "--output-dir", str(tmp_path / "out"), "--dry-run"], capsys)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "failed a short calibration run" in err[0]


def test_a_rerun_reuses_the_calibration_and_calls_no_model(tmp_path, capsys, fake):
    argv = [*BASE, "--num-instructions", "2", "--output-dir", str(tmp_path / "out")]
    run_cli("instruct", argv, capsys)
    fake.calls.clear()
    _, out = run_cli("instruct", argv, capsys)  # every batch from the cache, the rate from the first run
    assert out.startswith("Plan for instruct") and "Estimate: " in out
    assert fake.calls == []
