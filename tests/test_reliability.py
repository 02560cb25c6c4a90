"""Crash-proof resume and fault isolation: a run that is killed, hits a flaky backend, or meets rows
that always fail loses nothing it already paid for and finishes on the next run.

Runs are real `flows/instruct.py` processes on the fake backend (with a per-call delay and a call
log shared across processes), talking to the session's test server."""

import json
import subprocess
import threading

import pytest
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from flows.instruct import instruct
from tasks.backends import get_backend
from tests.conftest import cli_command, cli_env

pytestmark = pytest.mark.usefixtures("prefect_server")

ARGS = ["--backend", "fake", "--batch-size", "1", "--num-instructions", "2", "--num-evolutions", "1"]


def fake_model(log):
    return f"fake?delay=0.2&log={log}"


def logged(log) -> list[str]:
    return [json.loads(line) for line in open(log)] if log.exists() else []


def cut_partial_line(log) -> None:
    """Drop the call log's last line if a killed process left it half-written: a SIGKILL during the
    fake backend's write can cut it short (Linux stops a write at a page boundary for a fatal
    signal), and the resumed run's first line is then glued to it. This test once failed with a
    JSONDecodeError reading the log, in a full `make test` run. The call is made again on resume."""
    if log.exists():
        data = log.read_bytes()
        log.write_bytes(data[: data.rfind(b"\n") + 1])


def rows_of(out) -> list[dict]:
    return [json.loads(line) for line in open(out / "data.jsonl")]


def run(storage, log, out, timeout=300):
    cmd = cli_command(*ARGS, "--model", fake_model(log), "--output-dir", str(out))
    result = subprocess.run(cmd, env=cli_env(storage), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """What an uninterrupted run produces and how many prompts it sends."""
    tmp = tmp_path_factory.mktemp("clean")
    run(tmp / "results", tmp / "calls.jsonl", tmp / "out")
    return rows_of(tmp / "out"), len(logged(tmp / "calls.jsonl"))


def kill_when(cmd, env, trigger: str) -> list[str]:
    """Start `cmd`, SIGKILL it as soon as a line contains `trigger`; the lines seen so far."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(240, proc.kill)
    timer.start()
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if trigger in line:
            proc.kill()
            break
    proc.wait()
    timer.cancel()
    assert any(trigger in line for line in seen), "".join(seen)
    return seen


@pytest.mark.parametrize(
    "trigger",
    [
        "Task run 'self_instruct[2]' - Finished",
        "Task run 'evol_instruct[3]' - Finished",
        "Task run 'respond[3]' - Finished",
        "Saving ",
    ],
    ids=["self_instruct", "evol_instruct", "respond", "save"],
)
def test_kill_and_resume(tmp_path, clean_run, trigger):
    clean_rows, clean_calls = clean_run
    storage, log, out = tmp_path / "results", tmp_path / "calls.jsonl", tmp_path / "out"
    cmd = cli_command(*ARGS, "--model", fake_model(log), "--output-dir", str(out))
    seen = kill_when(cmd, cli_env(storage), trigger)
    cut_partial_line(log)
    finished = sum("Finished in state Completed()" in line and "Task run" in line for line in seen)
    before = len(logged(log))
    assert not out.exists() or (out / "summary.json").exists()  # nothing half-written

    run(storage, log, out)
    rerun = len(logged(log)) - before
    assert rerun <= clean_calls - finished  # finished batches were not recomputed
    assert before + rerun >= clean_calls
    rows = rows_of(out)
    assert rows == [{**r, "model": rows[0]["model"]} for r in clean_rows]
    assert len({r["id"] for r in rows}) == len(rows)
    assert not list(tmp_path.glob(".out.*"))  # no leftovers from the killed save


@pytest.mark.long
def test_two_concurrent_runs_share_one_result_store(tmp_path, clean_run):
    storage, log = tmp_path / "results", tmp_path / "calls.jsonl"
    procs = [
        subprocess.Popen(
            cli_command(*ARGS, "--model", fake_model(log), "--output-dir", str(tmp_path / name)),
            env=cli_env(storage),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("a", "b")
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert rows_of(tmp_path / "a") == rows_of(tmp_path / "b")
    assert len(rows_of(tmp_path / "a")) == len(clean_run[0])

    before = len(logged(log))
    run(storage, log, tmp_path / "c")  # the shared records are intact: all cache hits
    assert len(logged(log)) == before
    assert rows_of(tmp_path / "c") == rows_of(tmp_path / "a")


@pytest.mark.long
def test_transient_faults_are_retried_to_a_complete_dataset(tmp_path):
    flaky = get_backend("fake", "fake?fail_rate=0.3")
    flaky.calls.clear()
    summary = instruct(backend="fake", model="fake?fail_rate=0.3", batch_size=2, output_dir=tmp_path / "a")
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / "other"}):
        steady = instruct(backend="fake", model="fake", batch_size=2, output_dir=tmp_path / "b")
    assert summary["failures"] == 0
    assert len(flaky.calls) > len(get_backend("fake", "fake").calls) or flaky.calls  # it did fail
    strip = lambda rows: [{k: v for k, v in r.items() if k != "model"} for r in rows]  # noqa: E731
    assert strip(rows_of(tmp_path / "a")) == strip(rows_of(tmp_path / "b"))
    assert summary["rows"] == steady["rows"]


@pytest.mark.long
def test_permanent_failures_are_recorded_and_retried_next_run(tmp_path):
    model = "fake?fail_on=waggle"
    broken = get_backend("fake", model)
    broken.calls.clear()
    first = instruct(backend="fake", model=model, batch_size=3, num_evolutions=0, output_dir=tmp_path / "o")
    assert first["failures"] == 1 and first["rows"] > 0
    failures = [json.loads(line) for line in open(tmp_path / "o" / "failures.jsonl")]
    assert failures == [
        {
            "stage": "self_instruct",
            "row_id": None,
            "seed_id": "bees",
            "error": "RuntimeError: fake backend: permanent failure on a prompt containing 'waggle'",
            "raw_output": None,
        }
    ]
    broken.calls.clear()
    second = instruct(backend="fake", model=model, batch_size=3, num_evolutions=0, output_dir=tmp_path / "o")
    assert second["failures"] == 1
    assert any("waggle" in str(p) for p in broken.prompts)  # tried again, not cached as done
    assert all("waggle" not in str(p) for p in broken.prompts if "Questions:" not in str(p))
