"""A batch that fails even after its retries is split into single rows (fault isolation); what the
rescue achieved is kept, so the next run of the same command calls the model only for rows that
failed alone (issue 23, point 2)."""

import json

import pytest

from flows.instruct import instruct
from tasks.backends import get_backend

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.mark.long
def test_a_fully_rescued_batch_is_not_recomputed(tmp_path, fake, monkeypatch):
    generate = fake.generate

    def no_batches(prompts, params):  # every batch fails; each row alone succeeds
        if len(prompts) > 1:
            raise ConnectionError("fake: batch too large for the server")
        return generate(prompts, params)

    monkeypatch.setattr(fake, "generate", no_batches)
    args = {"backend": "fake", "model": "fake", "batch_size": 3, "num_evolutions": 0}
    first = instruct(**args, output_dir=tmp_path / "a")
    assert first["failures"] == 0 and first["rows"] > 0
    monkeypatch.setattr(fake, "generate", generate)
    fake.calls.clear()
    second = instruct(**args, output_dir=tmp_path / "b")
    assert fake.calls == []  # every batch read from the cache, rescued ones included
    rows = [(tmp_path / d / "data.jsonl").read_text() for d in ("a", "b")]
    assert rows[0] == rows[1] and second["rows"] == first["rows"]


@pytest.mark.long
def test_a_rerun_after_a_partial_rescue_asks_only_for_the_row_that_failed(tmp_path):
    model = "fake?fail_on=waggle"
    broken = get_backend("fake", model)
    args = {"backend": "fake", "model": model, "batch_size": 3, "num_evolutions": 0}
    first = instruct(**args, output_dir=tmp_path / "o")
    assert first["failures"] == 1
    broken.calls.clear()
    second = instruct(**args, output_dir=tmp_path / "o")
    assert second["failures"] == 1 and second["rows"] == first["rows"]
    assert broken.prompts and all("waggle" in json.dumps(p) for p in broken.prompts)
