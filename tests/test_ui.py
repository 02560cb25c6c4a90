"""The flow-run page in a real browser: for every flow, a run against `prefect server start`, its
page opened in headless Chromium, the Artifacts tab clicked, and the stage progress (rows), the
sample table and the report checked on screen, with a screenshot kept for a person to look at.
Skipped where Chromium is not installed (`apt-get install chromium`)."""

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.browser import CHROMIUM, Browser
from tests.conftest import ROOT, cli_command
from tests.test_deployment import PREFECT, server  # noqa: F401  (the real server fixture)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")

RUNS = {
    "instruct": ["--num-instructions", "2", "--num-evolutions", "1"],
    "magpie": ["--num-rows", "4"],
    "self_instruct": ["--num-instructions", "4"],
    "generate": [],
}


@pytest.mark.long
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
            # the artifacts render one after another: each is waited for (a loaded machine is slow)
            for wanted in (f"{key}-report", f"{key}-sample", "rows done in"):
                browser.wait_for_text(wanted)
            shot = browser.screenshot(tmp_path / f"{flow}.png")
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    assert sorted(flow_names[r["flow_id"]] for r in runs) == sorted(RUNS), json.dumps(runs)[:500]


@pytest.mark.long
def test_the_grouped_parameter_form_and_the_run_graph(server, tmp_path):  # noqa: F811
    """A deployment's run form draws each parameter group as a section of fields; a run's page draws
    the graph whose edges tests/test_flow_instruct.py reads through the API. UI_SCREENSHOTS=docs
    keeps the two screenshots (the figures in docs/deployment.md)."""
    api, keep = server["PREFECT_API_URL"], Path(os.environ.get("UI_SCREENSHOTS") or tmp_path)
    for args in (
        ["work-pool", "create", "instructforge", "--type", "process"],
        ["--no-prompt", "deploy", "--name", "daily-refresh"],
    ):
        done = subprocess.run(
            [PREFECT, *args], env=server, cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    args = [
        "--backend",
        "fake",
        "--model",
        "fake",
        "--num-instructions",
        "2",
        "--batch-size",
        "4",
        "--max-rounds",
        "1",
    ]
    command = cli_command(*args, "--output-dir", str(tmp_path / "out"))
    done = subprocess.run(command, env=server, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    deployment = httpx.get(f"{api}/deployments/name/instruct/daily-refresh").json()
    runs = httpx.post(f"{api}/flow_runs/filter", json={}).json()
    (run,) = [r for r in runs if r["deployment_id"] is None]  # not the schedule's
    ui = api.removesuffix("/api")
    with Browser(width=1200, height=900) as browser:
        browser.open(f"{ui}/deployments/deployment/{deployment['id']}/run")
        for field in ("Output Dir", "Model", "Backend", "Temperature", "Batch Size", "Keep Versions"):
            browser.wait_for_text(field)  # the form's sections render one after another
        browser.evaluate(  # down to the groups
            "[...document.querySelectorAll('*')].find(e => e.innerText"
            " && e.innerText.trim().startsWith('llm (Optional)')).scrollIntoView()"
        )
        small_png(browser.screenshot(keep / "ui-parameters.png"))
        browser.open(f"{ui}/runs/flow-run/{run['id']}")
        browser.wait_for_text("Task Runs")
        time.sleep(5)  # the graph is drawn on a canvas, after the page's text
        shot = small_png(browser.screenshot(keep / "run-graph.png"))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def small_png(path: Path) -> Path:
    """The screenshot in 64 colours: a figure small enough to keep in the repository."""
    from PIL import Image

    Image.open(path).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(path, optimize=True)
    return path
