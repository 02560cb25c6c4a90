"""Shared fixtures: one Prefect test server per session, a private result store per test, and the
fake backend with its call log cleared."""

import tasks  # noqa: F401  (first: Prefect defaults before prefect is imported)

# isort: split
import pytest
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.testing.utilities import prefect_test_harness

from tasks.backends import get_backend
from tasks.backends.fake import fake_text


@pytest.fixture(scope="session")
def prefect_server():
    # The temporary server needs ~20 s to start here, more when both cores are busy.
    with prefect_test_harness(server_startup_timeout=300):
        yield


@pytest.fixture(autouse=True)
def result_storage(tmp_path):
    """Each test caches into its own directory, so tests never see each other's records."""
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / "results"}):
        yield tmp_path / "results"


@pytest.fixture
def fake():
    backend = get_backend("fake", "fake")
    backend.calls.clear()
    backend.responder = fake_text
    yield backend
    backend.calls.clear()
    backend.responder = fake_text
