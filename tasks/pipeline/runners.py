"""Where a flow's technique tasks run: threads in this process (the default) or a Dask cluster,
through Prefect's own integration (prefect-dask's `DaskTaskRunner`).

A flow's task runner is fixed when it is decorated, so the choice is applied with
`flow.with_options(task_runner=...)`: by the CLI flags `--dask-address` / `--dask-workers`, or in
Python with `with_task_runner(flow, dask_address=..., dask_workers=...)`. Each Dask worker is its own
process and loads the model itself on its first batch (tasks receive model ids, never a model).
Without flags, the CLI reads the same choice from `INSTRUCTFORGE_DASK_ADDRESS` or
`INSTRUCTFORGE_DASK_WORKERS` (handy with `make run`).
"""

from __future__ import annotations

import os

from prefect import Flow

ADDRESS_ENV = "INSTRUCTFORGE_DASK_ADDRESS"
WORKERS_ENV = "INSTRUCTFORGE_DASK_WORKERS"


def dask_runner(address: str | None = None, workers: int | None = None):
    """A DaskTaskRunner on the cluster at `address` (e.g. `tcp://10.0.0.5:8786`), or on a new local
    cluster of `workers` single-threaded worker processes."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ValueError("Dask execution needs prefect-dask: `pip install prefect-dask`.") from None
    if address and workers:
        raise ValueError("Give either a Dask scheduler address or a local worker count, not both.")
    if address:
        # subtle: DaskTaskRunner(cluster=<object>) is broken in prefect-dask 0.3.7 (the cluster is
        # dropped when the runner is copied); an address or a cluster class both survive the copy.
        return DaskTaskRunner(address=address)
    if not workers or workers < 1:
        raise ValueError(f"A local Dask cluster needs at least 1 worker, got {workers!r}.")
    # One task at a time per worker process; Dask's nanny also pins each worker's torch/MKL to one
    # thread (OMP_NUM_THREADS=1), so n workers use n cores.
    kwargs = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=kwargs)


def with_task_runner(flow: Flow, dask_address: str | None = None, dask_workers: int | None = None) -> Flow:
    """`flow` unchanged, or a copy whose tasks run on Dask (arguments, else the environment)."""
    address = dask_address or os.environ.get(ADDRESS_ENV) or None
    workers = dask_workers or int(os.environ.get(WORKERS_ENV) or 0) or None
    if not address and not workers:
        return flow
    return flow.with_options(task_runner=dask_runner(address, workers))
