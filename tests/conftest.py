"""Shared fixtures: one Prefect test server per session, a private result store per test, the
fake backend with its call log cleared, and the C kernels built for a plainer CPU; and the order
files are handed to the workers in."""

import os
import platform
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.testing.utilities import prefect_test_harness

from tasks.backends import get_backend
from tasks.backends.engine import kernels
from tasks.backends.fake import fake_text


def pytest_collection_modifyitems(config, items):
    """Files with `long` tests first, the most first: `--dist loadfile` hands files to the workers
    in collection order (the Makefile turns off xdist's reordering by test count, which put files
    of one or two long tests last, leaving the other worker idle for minutes at the end)."""
    long = Counter(item.path for item in items if item.get_closest_marker("long"))
    first = {}
    for i, item in enumerate(items):
        first.setdefault(item.path, i)
    items.sort(key=lambda item: (-long[item.path], first[item.path]))


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


ROOT = Path(__file__).resolve().parents[1]


def cli_env(storage: Path, **extra: str) -> dict[str, str]:
    """Environment for a `flows/*.py` subprocess that talks to this session's test server (no
    temporary server of its own) and caches into `storage`."""
    return {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_LOCAL_STORAGE_PATH": str(storage),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def cli_command(*args: str, flow: str = "instruct") -> list[str]:
    return [sys.executable, str(ROOT / "flows" / f"{flow}.py"), *args]


def _x86_build(tmp_path_factory, name: str, flags: list[str]):
    """The C kernels built for x86-64 with `flags` instead of -march=native."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("needs an x86-64 C compiler")
    library = tmp_path_factory.mktemp(name) / f"{name}.so"
    command = [compiler, *flags, "-fPIC", "-shared", *map(str, kernels.SOURCES)]
    subprocess.run([*command, "-o", str(library), "-lm"], check=True, capture_output=True)
    return kernels.load(library)


@pytest.fixture(scope="session")
def plain_kernel(tmp_path_factory):
    """The C kernels built without AVX2/FMA (so without AVX-512): the portable loops other CPUs run."""
    return _x86_build(tmp_path_factory, "plain", ["-O2", "-mno-avx2", "-mno-fma"])


@pytest.fixture(scope="session")
def avx2_kernel(tmp_path_factory):
    """The C kernels built for AVX2 and FMA without AVX-512 (x86-64-v3): the vector loops of CPUs
    without AVX-512, which the native build here may not run."""
    return _x86_build(tmp_path_factory, "avx2", ["-O3", "-march=x86-64-v3", "-fno-math-errno"])
