"""Alerts against a real `prefect server`: `python -m tasks.alerts` installs Prefect automations with
a notification block, and a failing deployment run, executed by a process worker, makes the server
send the notification (to a webhook receiver on loopback)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.test_deployment import PREFECT, ROOT, prefect, server  # noqa: F401  (the real server fixture)


@pytest.fixture
def receiver():
    """A webhook on loopback; yields (url, the JSON bodies posted to it)."""
    posted = []

    class Hook(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            posted.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    http = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{http.server_port}/hook", posted
    http.shutdown()
    http.server_close()


def stop_flow_runs(api: str) -> None:
    """Kill the processes of the server's flow runs: the process worker starts each in a session of
    its own, recorded on the run as infrastructure_pid ("host:pid")."""
    for run in httpx.post(f"{api}/flow_runs/filter", json={}).json():
        pid = (run.get("infrastructure_pid") or "").rpartition(":")[2]
        if pid.isdigit():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)


@pytest.mark.long
def test_a_failing_deployment_run_sends_the_alert(server, receiver, tmp_path):  # noqa: F811
    url, posted = receiver
    command = [sys.executable, "-m", "tasks.alerts", "--webhook", url, "--stuck-after", "60"]
    installed = subprocess.run(command, env=server, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    api = server["PREFECT_API_URL"]
    names = {a["name"] for a in httpx.post(f"{api}/automations/filter", json={}).json()}
    assert {"instructforge: a run failed", "instructforge: a run is stuck"} <= names

    prefect(server, "work-pool", "create", "instructforge", "--type", "process")
    prefect(server, "--no-prompt", "deploy", "--all")
    # A refresh that fails: its seed file is gone.
    params = json.dumps({"llm": {"backend": "fake", "model": "fake"}, "seeds": str(tmp_path / "gone.jsonl")})
    prefect(server, "deployment", "run", "instruct/daily-refresh", "--params", params, cwd=tmp_path)
    worker = [PREFECT, "worker", "start", "--pool", "instructforge", "--run-once"]
    subprocess.run(worker, env=server, cwd=tmp_path, capture_output=True, timeout=300)
    deadline = time.monotonic() + 120  # the server's trigger and action services run on a loop
    while not posted and time.monotonic() < deadline:
        time.sleep(1)
    assert posted, "no alert was sent"
    assert posted[0]["subject"] == "instructforge: a run failed"
    assert "daily-refresh" in posted[0]["text"] and "Failed" in posted[0]["text"]


@pytest.mark.long
def test_a_run_still_running_past_the_limit_sends_the_stuck_alert(server, receiver, tmp_path):  # noqa: F811
    url, posted = receiver
    command = [sys.executable, "-m", "tasks.alerts", "--webhook", url, "--stuck-after", "0.2"]  # 12 s
    subprocess.run(command, env=server, cwd=ROOT, check=True, capture_output=True, timeout=120)
    prefect(server, "work-pool", "create", "instructforge", "--type", "process")
    prefect(server, "--no-prompt", "deploy", "--all")
    # A slow refresh: every model call takes 8 s, so the run is still going after 12 s.
    params = {
        "llm": {"backend": "fake", "model": "fake?delay=8"},
        "num_evolutions": 0,
        "output": {"output_dir": str(tmp_path / "o")},
    }
    prefect(
        server, "deployment", "run", "instruct/daily-refresh", "--params", json.dumps(params), cwd=tmp_path
    )
    # The worker runs the flow in a child process; the alert is due while it is still running, so
    # the worker and that child are stopped once it came (the run's own end is not under test).
    worker = [PREFECT, "worker", "start", "--pool", "instructforge", "--run-once"]
    running = subprocess.Popen(
        worker,
        env=server,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not posted and time.monotonic() < deadline and running.poll() is None:
            time.sleep(1)
        if not posted:  # the run ended (or the wait ran out) first: the alert may still be on its way
            time.sleep(min(30.0, max(0.0, deadline - time.monotonic())))
    finally:
        stop_flow_runs(server["PREFECT_API_URL"])
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.pid, signal.SIGKILL)
        running.wait(timeout=30)
    assert [p["subject"] for p in posted] == ["instructforge: a run is stuck"]
    assert "has been running for over 0:00:12" in posted[0]["text"]
