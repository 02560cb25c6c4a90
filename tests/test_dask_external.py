"""The scale-out path as a user builds it: `dask scheduler` and `dask worker` processes started by
hand on loopback, one Prefect server, one shared result store (bench/dask_soak.py starts them).
Every stage is cached on the workers, so a second run makes no model calls, and no worker logs a
cache-key error (issue 23, point 1: respond batches failed to compute their key on a fresh worker)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from dask_soak import KEY_ERROR, soak  # noqa: E402

from tests.conftest import cli_env  # noqa: E402

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.mark.slow
@pytest.mark.long
def test_soak_with_faults_and_a_killed_worker_then_a_rerun_from_the_cache(tmp_path):
    """30% of calls fail, a worker is killed with kill -9 mid-run and restarted; the dataset equals
    a fault-free run's, and the same command again (on the restarted, fresh worker too) makes no
    model calls and logs no cache-key error."""
    result = soak(tmp_path, cli_env(tmp_path / "unused"), kill=True, fail_rate=0.3)
    assert result["soak_rc"] == 0, result["soak_output"]
    assert result["same_dataset"]
    assert result["rerun_rc"] == 0, result["rerun_output"]
    assert result["rerun_calls"] == 0 and result["rerun_same_dataset"]
    assert KEY_ERROR not in result["rerun_output"]
    assert result["worker_key_errors"] == 0
