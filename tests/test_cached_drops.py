"""Drops are cached like rows (a bad generation is data): a rerun after fixing a backend under the
same model id reuses them, and the README names the way to regenerate (issue 23, point 7)."""

import re

import pytest
from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings

from flows.instruct import instruct
from tasks.backends import get_backend
from tasks.backends.fake import fake_text
from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_cached_drops_are_regenerated_the_way_the_readme_says(tmp_path):
    readme = (ROOT / "README.md").read_text()
    setting = re.search(r"`(PREFECT_TASKS_REFRESH_CACHE=true) python flows/instruct.py", readme)
    assert setting, "the README must name how to regenerate cached drops"

    backend = get_backend("fake", "fake?name=was-broken")
    args = {"backend": "fake", "model": "fake?name=was-broken", "num_evolutions": 0}
    backend.responder = lambda prompt, params: ""  # broken: every generation is dropped
    broken = instruct(**args, output_dir=tmp_path / "a")
    assert broken["rows"] == 0 and broken["drops"]

    backend.responder = fake_text  # fixed, under the same model id
    backend.calls.clear()
    reused = instruct(**args, output_dir=tmp_path / "b")
    assert reused["rows"] == 0 and backend.calls == []  # the drops came from the cache

    with temporary_settings({PREFECT_TASKS_REFRESH_CACHE: True}):
        fresh = instruct(**args, output_dir=tmp_path / "c")
    assert fresh["rows"] > 0 and backend.calls
