"""prefect.yaml for real: a local Prefect server (SQLite, loopback), `prefect deploy --all`, a run
triggered through the API and executed by a process worker, its state and artifacts read back."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    env.pop("PREFECT_LOCAL_STORAGE_PATH", None)
    proc = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("prefect server did not start within 240 s")
    yield env
    proc.terminate()
    proc.wait(timeout=60)


def prefect(env, *args, cwd=ROOT):
    result = subprocess.run([PREFECT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.long
def test_deploy_trigger_and_watch_a_run(server, tmp_path):
    prefect(server, "work-pool", "create", "instructforge", "--type", "process")
    deployed = prefect(server, "--no-prompt", "deploy", "--all")
    for name in ("instruct/daily-refresh", "magpie/magpie-daily", "self_instruct/self-instruct-weekly"):
        assert name in deployed
    assert "generate/generate-daily" in deployed
    # A run's group replaces the deployment's whole (Prefect merges parameters one level deep).
    output = {"output_dir": str(tmp_path / "out"), "versioned": True, "keep_versions": 14}
    params = json.dumps({"llm": {"backend": "fake", "model": "fake"}, "output": output})
    triggered = prefect(
        server, "deployment", "run", "instruct/daily-refresh", "--params", params, cwd=tmp_path
    )
    run_id = re.search(r"flow-run/([0-9a-f-]{36})", triggered).group(1)
    prefect(server, "worker", "start", "--pool", "instructforge", "--run-once", cwd=tmp_path)

    api = server["PREFECT_API_URL"]
    run = httpx.get(f"{api}/flow_runs/{run_id}").json()
    assert run["state_type"] == "COMPLETED"
    artifacts = httpx.post(
        f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}
    ).json()
    assert {"instruct-progress", "instruct-sample", "instruct-report"} <= {a["key"] for a in artifacts}
    versions = [p for p in (tmp_path / "out").iterdir() if p.name != "latest"]  # a dated one per refresh
    assert len(versions) == 1 and (versions[0] / "README.md").exists()
    assert (tmp_path / "out" / "latest").resolve() == versions[0].resolve()


def test_every_flow_has_a_deployment_whose_parameters_validate():
    import importlib

    import yaml

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployed = {}
    for deployment in spec["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
        params = flow.validate_parameters(deployment["parameters"])  # raises on a wrong name or value
        # a group given in part keeps the flow's own defaults for the rest of its fields
        assert (
            params["output"].private
            and params["sampling"].model_dump() == flow.parameters.properties["sampling"]["default"]
        )
        deployed[path] = deployment["parameters"]
    assert set(deployed) == {f"flows/{p.name}" for p in (ROOT / "flows").glob("[!_]*.py")}
    # scheduled refreshes keep dated versions, point `latest` at the newest and prune the oldest
    assert all(p["output"]["versioned"] and p["output"]["keep_versions"] >= 1 for p in deployed.values())
