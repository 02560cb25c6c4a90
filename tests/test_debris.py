"""A killed run leaves no debris (issue 23, point 4): its temporary Prefect server ends with it, and
the next run marks its flow run Crashed instead of leaving it Running forever."""

import os
import signal
import subprocess
import threading
import time
from datetime import datetime, timezone

import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

from tests.conftest import cli_command, cli_env

ARGS = ["--backend", "fake", "--batch-size", "1", "--num-instructions", "2", "--num-evolutions", "0"]


def start(cmd, env):
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(proc, trigger: str, limit: float = 240) -> list[str]:
    """The lines `proc` printed up to the first that contains `trigger`."""
    timer = threading.Timer(limit, proc.kill)
    timer.start()
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if trigger in line:
            break
    timer.cancel()
    assert any(trigger in line for line in seen), "".join(seen)
    return seen


@pytest.mark.long
def test_the_temporary_server_ends_with_a_killed_run(tmp_path):
    env = {k: v for k, v in cli_env(tmp_path / "results").items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "home")
    cmd = cli_command(*ARGS, "--model", "fake?delay=0.5", "--output-dir", str(tmp_path / "out"))
    proc = start(cmd, env)
    wait_for(proc, "Task run 'self_instruct[0]'")  # the temporary server is up and serving the run
    children = psutil.Process(proc.pid).children(recursive=True)
    assert any("uvicorn" in " ".join(c.cmdline()) for c in children)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == [], [c.cmdline() for c in alive]


@pytest.mark.usefixtures("prefect_server")
def test_the_next_run_marks_a_killed_run_crashed(tmp_path):
    began = datetime.now(timezone.utc)
    env = cli_env(tmp_path / "results")
    cmd = cli_command(*ARGS, "--model", "fake?delay=0.5", "--output-dir", str(tmp_path / "out"))
    proc = start(cmd, env)
    wait_for(proc, "Task run 'self_instruct[0]'")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    since = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=began))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=since)
    states = sorted(run.state.type.value for run in runs)
    assert states == ["COMPLETED", "CRASHED"], [(r.name, r.state) for r in runs]
    crashed = next(run for run in runs if run.state.is_crashed())
    assert crashed.infrastructure_pid.endswith(f":{proc.pid}")
