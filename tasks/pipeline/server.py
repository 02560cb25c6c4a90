"""Run hygiene around the Prefect server: a killed run leaves no debris.

Without `PREFECT_API_URL`, Prefect starts a temporary server as a child process
(`SubprocessASGIServer` in prefect/server/api/server.py) and stops it at exit; after `kill -9` no
exit code runs and the server lives on, parented to PID 1. `temporary_server_dies_with_parent` has
the kernel send it SIGTERM when its parent dies (Linux `PR_SET_PDEATHSIG`), which uvicorn handles
as a clean shutdown.

A killed flow run also stays Running in the database forever. Each run started by the CLI records
its process as the flow run's `infrastructure_pid` (`host:pid`, the field Prefect's workers fill
for the same purpose), and at start marks Crashed every Running flow run whose recorded process on
this host is gone (`mark_crashed_runs`), with Prefect's own Crashed state.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from typing import Any

from prefect import Flow

PR_SET_PDEATHSIG = 1
# Looked up here, not in the child: between fork and exec only the prctl call itself should run.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class _Subprocess:
    """The `subprocess` module as prefect.server.api.server sees it: every Popen it makes (the
    temporary server) gets the parent-death signal."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args: Any, **kwargs: Any) -> subprocess.Popen:  # noqa: N802 (the module's name)
        return subprocess.Popen(*args, preexec_fn=_die_with_parent, **kwargs)


def temporary_server_dies_with_parent() -> None:
    """Make the temporary server, if this process starts one, end when this process ends."""
    from prefect.settings import PREFECT_API_URL

    if not sys.platform.startswith("linux") or PREFECT_API_URL.value():
        return
    from prefect.server.api import server

    server.subprocess = _Subprocess()


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _gone(infrastructure_pid: str | None, host: str) -> bool:
    """True when `infrastructure_pid` names a process on `host` that no longer exists."""
    name, _, pid = (infrastructure_pid or "").rpartition(":")
    if name != host or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def mark_crashed_runs(client: Any) -> list[str]:
    """Mark Crashed each Running flow run whose recorded process on this host is gone; returns
    their names."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    running = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])))
    host = socket.gethostname()
    crashed = []
    for run in client.read_flow_runs(flow_run_filter=running):
        if _gone(run.infrastructure_pid, host):
            message = f"Its process ({run.infrastructure_pid}) ended without reporting a final state."
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            crashed.append(run.name)
    return crashed


def _on_running(flow: Flow, flow_run: Any, state: Any) -> None:
    """Record this run's process, then close the runs whose process is gone."""
    from prefect import get_run_logger
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, infrastructure_pid=this_process())
        crashed = mark_crashed_runs(client)
    if crashed:
        get_run_logger().warning(
            "Marked %d earlier run(s) Crashed (their process was killed): %s",
            len(crashed),
            ", ".join(crashed),
        )


def with_run_hygiene(flow: Flow) -> Flow:
    """`flow` with the hook that records its process and marks dead runs Crashed."""
    import logging

    temporary_server_dies_with_parent()
    # Prefect's engine announces every hook it runs ("Running hook '_on_running'..."): bookkeeping of
    # ours that a user can do nothing about. Its warnings and errors still show.
    logging.getLogger("prefect.engine").setLevel(logging.WARNING)
    return flow.with_options(on_running=[*flow.on_running_hooks, _on_running])
