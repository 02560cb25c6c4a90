"""Fault-injection soak on the scale-out path, as a user runs it: a Dask scheduler and 2 worker
processes started by hand on 127.0.0.1 (`dask scheduler`, `dask worker`), one Prefect server,
a shared result store, and `flows/instruct.py --dask-address` on the fake backend.

1. A fault-free run (its own result store): the reference dataset.
2. The soak: the backend fails 30% of calls (transient, retried), and one worker is killed with
   `kill -9` once a third of the calls are made, then restarted. The dataset must equal the
   reference.
3. The same command again: it must make no model calls (every batch from the cache), and no
   worker may log "Error encountered when computing cache key".

    python bench/dask_soak.py            # prints one line per check, exits 1 if any fails

Prints the counts it measured; docs/reliability.md records a run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ARGS = ["--backend", "fake", "--batch-size", "2", "--num-instructions", "3", "--num-evolutions", "1"]
KEY_ERROR = "Error encountered when computing cache key"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class HandStartedCluster:
    """`dask scheduler` and N `dask worker` processes on loopback, each logging to a file, started
    from the project directory as the README's users start them (PYTHONPATH names the project)."""

    def __init__(self, workdir: Path, env: dict[str, str], workers: int = 2) -> None:
        self.workdir, self.port, self.workers = workdir, free_port(), workers
        self.env = {**env, "PYTHONPATH": str(ROOT)}
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "a")
        self.procs[name] = subprocess.Popen(
            [str(BIN / "dask"), *args], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def start_worker(self, name: str) -> None:
        args = ["worker", self.address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny"]
        self._start(name, [*args, "--name", name, "--dashboard-address", ":0"])

    def __enter__(self) -> HandStartedCluster:
        scheduler = [
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dashboard-address",
            ":0",
        ]
        self._start("scheduler", scheduler)
        for i in range(self.workers):
            self.start_worker(f"worker{i}")
        self.wait_for_workers(self.workers)
        return self

    def wait_for_workers(self, count: int, limit: float = 120) -> None:
        from distributed import Client

        with Client(self.address, timeout=limit) as client:
            client.wait_for_workers(count, timeout=limit)

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("worker*.log")))

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            proc.kill()


def calls(log: Path) -> int:
    return sum(1 for _ in open(log)) if log.exists() else 0


def run_flow(cluster: HandStartedCluster, env: dict, model: str, out: Path, storage: Path, **kw):
    cmd = [sys.executable, str(ROOT / "flows" / "instruct.py"), *ARGS, "--model", model]
    cmd += ["--output-dir", str(out), "--dask-address", cluster.address]
    env = {**env, "PREFECT_LOCAL_STORAGE_PATH": str(storage), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw
    )


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in open(out / "data.jsonl")]


def strip_model(data: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "model"} for row in data]


def soak(workdir: Path, env: dict[str, str], kill: bool = True, fail_rate: float = 0.3) -> dict:
    """The three runs above on one hand-started cluster; returns what was measured."""
    result: dict = {}
    storage = workdir / "results"
    with HandStartedCluster(workdir, {**env, "PREFECT_LOCAL_STORAGE_PATH": str(storage)}) as cluster:
        clean_log = workdir / "clean.jsonl"
        proc = run_flow(cluster, env, f"fake?log={clean_log}", workdir / "clean", workdir / "clean-results")
        result["clean_output"] = proc.communicate(timeout=900)[0]
        result["clean_calls"] = calls(clean_log)

        log = workdir / "calls.jsonl"
        model = f"fake?fail_rate={fail_rate}&delay=0.05&log={log}"
        proc = run_flow(cluster, env, model, workdir / "soak", storage)
        if kill:
            while proc.poll() is None and calls(log) < result["clean_calls"] // 3:
                time.sleep(0.1)
            cluster.kill("worker0")
            result["killed_after_calls"] = calls(log)
            cluster.start_worker("worker0")
        result["soak_output"] = proc.communicate(timeout=900)[0]
        result["soak_rc"] = proc.returncode
        result["soak_calls"] = calls(log)

        proc = run_flow(cluster, env, model, workdir / "rerun", storage)
        result["rerun_output"] = proc.communicate(timeout=900)[0]
        result["rerun_rc"] = proc.returncode
        result["rerun_calls"] = calls(log) - result["soak_calls"]
        result["worker_key_errors"] = cluster.logs().count(KEY_ERROR)
    result["same_dataset"] = strip_model(rows(workdir / "soak")) == strip_model(rows(workdir / "clean"))
    result["rerun_same_dataset"] = strip_model(rows(workdir / "rerun")) == strip_model(
        rows(workdir / "clean")
    )
    result["rows"] = len(rows(workdir / "clean"))
    return result


def main() -> int:
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=300):
        env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONUNBUFFERED": "1"}
        r = soak(Path(tmp), env)
    checks = {
        "soak run exit code 0": r["soak_rc"] == 0,
        "dataset equals the fault-free one": r["same_dataset"],
        "rerun makes no model calls": r["rerun_calls"] == 0,
        "rerun dataset equals the fault-free one": r["rerun_same_dataset"],
        "no cache-key error in the workers' logs": r["worker_key_errors"] == 0,
    }
    print(
        f"rows {r['rows']}; fault-free run {r['clean_calls']} prompts; soak {r['soak_calls']} prompts "
        f"(worker0 killed after {r['killed_after_calls']}); rerun {r['rerun_calls']} prompts; "
        f"cache-key errors in worker logs {r['worker_key_errors']}"
    )
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    import tasks  # noqa: F401  (Prefect defaults before prefect is imported)

    raise SystemExit(main())
