"""The flow-run page in a real browser: for every flow, a run against `prefect server start`, its
page opened in headless Chromium, the Artifacts tab clicked, and the stage progress (rows), the
sample table and the report checked on screen, with a screenshot kept for a person to look at.
Skipped where Chromium is not installed (`apt-get install chromium`)."""

import json
import subprocess

import httpx
import pytest

from tests.browser import CHROMIUM, Browser
from tests.conftest import cli_command
from tests.test_deployment import server  # noqa: F401  (the real server fixture)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")

RUNS = {
    "instruct": ["--num-instructions", "2", "--num-evolutions", "1"],
    "magpie": ["--num-rows", "4"],
    "self_instruct": ["--num-instructions", "4"],
    "generate": [],
}


def test_every_flow_run_page_shows_its_artifacts(server, tmp_path):  # noqa: F811
    api = server["PREFECT_API_URL"]
    for flow, args in RUNS.items():
        command = cli_command(
            "--backend", "fake", "--model", "fake", *args, "--output-dir", str(tmp_path / flow), flow=flow
        )
        done = subprocess.run(command, env=server, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    runs = httpx.post(f"{api}/flow_runs/filter", json={}).json()
    flow_names = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}).json()}
    ui = api.removesuffix("/api")
    with Browser() as browser:
        for run in runs:
            flow = flow_names[run["flow_id"]]
            browser.open(f"{ui}/runs/flow-run/{run['id']}")
            browser.wait_for_text("Artifacts")
            assert browser.click_text("Artifacts"), flow
            key = flow.replace("_", "-")
            text = browser.wait_for_text(f"{key}-report")
            assert f"{key}-sample" in text and "rows done in" in text, (flow, text[:2000])
            shot = browser.screenshot(tmp_path / f"{flow}.png")
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    assert sorted(flow_names[r["flow_id"]] for r in runs) == sorted(RUNS), json.dumps(runs)[:500]
