"""Running the flows as a service: run names that tell runs apart in the UI, and no telemetry
unless the user turns it on."""

import os
import sys

import pytest
from prefect.client.orchestration import get_client

from flows.generate import generate
from flows.instruct import instruct
from tests.conftest import ROOT
from tests.test_progress import run_in_terminal

SMALL = {"backend": "fake", "model": "fake", "num_instructions": 2, "num_evolutions": 0}


def run_names(*states) -> list[str]:
    with get_client(sync_client=True) as client:
        return [client.read_flow_run(s.state_details.flow_run_id).name for s in states]


@pytest.mark.usefixtures("prefect_server")
def test_runs_into_different_directories_have_different_names(tmp_path, fake):
    first = instruct(**SMALL, output_dir=tmp_path / "alpha", return_state=True)
    second = instruct(**SMALL, output_dir=tmp_path / "beta", return_state=True)
    third = generate(backend="fake", model="fake", output_dir=tmp_path / "gamma", return_state=True)
    names = run_names(first, second, third)
    assert names[0].startswith("instruct-alpha-") and names[1].startswith("instruct-beta-")
    assert names[2].startswith("generate-gamma-")
    assert names[0].rsplit("-", 1)[1].endswith("Z")  # the start time, in UTC


# What `python flows/instruct.py` imports first: the flow module, as written.
IMPORT = "import flows.instruct; print('imported')"
NOTICE = "Prefect collects anonymous usage data"


def import_on_a_terminal(tmp_path, code: str, **env: str) -> str:
    """Output of `code` run on a pseudo-terminal by a new Prefect user (an empty PREFECT_HOME)."""
    base = {k: v for k, v in os.environ.items() if k not in ("DO_NOT_TRACK", "CI", "PREFECT_API_URL")}
    base.update(PREFECT_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT), **env)
    code_, output = run_in_terminal([sys.executable, "-c", code], base, timeout=120)
    assert code_ == 0 and "imported" in output, output
    return output


def test_the_project_sends_no_telemetry_and_prints_no_notice(tmp_path):
    assert NOTICE not in import_on_a_terminal(tmp_path, IMPORT)


def test_the_user_turns_telemetry_on_with_do_not_track_0(tmp_path):
    # The same import with telemetry on shows Prefect's notice: the check above can see it.
    assert NOTICE in import_on_a_terminal(tmp_path, IMPORT, DO_NOT_TRACK="0")
