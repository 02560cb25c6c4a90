"""The instruct flow on a local Dask cluster (prefect-dask) gives the dataset the default thread
runner gives: tasks ship model ids, and each worker process loads its own backend."""

import json

import pytest
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from flows.instruct import instruct
from tasks.pipeline.runners import dask_runner, with_task_runner

pytestmark = pytest.mark.usefixtures("prefect_server")

SMALL = {"backend": "fake", "model": "fake", "num_instructions": 3, "num_evolutions": 1, "batch_size": 4}


def read_rows(path):
    return [json.loads(line) for line in open(path / "data.jsonl")]


def test_dask_cluster_with_two_workers_writes_the_same_dataset(tmp_path, fake):
    threads = instruct(**SMALL, output_dir=tmp_path / "threads")
    assert fake.calls  # the default runner calls the backend in this process
    fake.calls.clear()
    on_dask = with_task_runner(instruct, dask_workers=2)
    # A fresh result store, so the workers compute every batch instead of reading the first run's.
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / "dask-results"}):
        summary = on_dask(**SMALL, output_dir=tmp_path / "dask")
    assert fake.calls == []  # every model call happened in a worker process
    assert len(list((tmp_path / "dask-results").iterdir())) >= 4  # batches the workers computed
    assert read_rows(tmp_path / "dask") == read_rows(tmp_path / "threads")
    assert summary["rows"] == len(read_rows(tmp_path / "threads")) > 0
    tokens = {stage: (u["prompt_tokens"], u["completion_tokens"]) for stage, u in summary["usage"].items()}
    assert tokens == {
        stage: (u["prompt_tokens"], u["completion_tokens"]) for stage, u in threads["usage"].items()
    }


def test_dask_options_are_checked():
    with pytest.raises(ValueError, match="not both"):
        dask_runner("tcp://127.0.0.1:8786", 2)
    with pytest.raises(ValueError, match="at least 1 worker"):
        dask_runner(None, 0)
    assert with_task_runner(instruct) is instruct
