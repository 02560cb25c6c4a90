"""Which Prefect server a run talks to, and run hygiene around it: a killed run leaves no debris.

Without `PREFECT_API_URL`, a run started from the command line first looks for a Prefect server
already running at the default local address (`prefect server start`, http://127.0.0.1:4200/api)
and uses it, saying so in one line (`local_server`): starting Prefect's temporary server instead
costs 4-20 s before the first line of progress. A server is used only if it answers as Prefect does
(`/api/health` is `true`), runs this client's major version and no older (an older one would warn on
every run), and sets no server-wide result storage, so results are persisted locally as with the
temporary server and the cache of earlier runs still hits. Anything else on that port, or nothing,
leaves today's behaviour: a temporary server. `INSTRUCTFORGE_REUSE_SERVER=0` turns the search off.

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
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import Flow

PR_SET_PDEATHSIG = 1
DEFAULT_API_URL = "http://127.0.0.1:4200/api"  # where `prefect server start` listens by default
REUSE_ENV = "INSTRUCTFORGE_REUSE_SERVER"
_PROBE_TIMEOUT_S = 1.0  # a local server answers in milliseconds; a busy one may take longer
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


# No proxy for a local port, whatever HTTP_PROXY says.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get_json(url: str, timeout: float) -> Any:
    with _opener.open(url, timeout=timeout) as response:
        if response.status != 200:
            raise ValueError(f"HTTP {response.status}")
        return json.loads(response.read(10_000))


def probe(api_url: str = DEFAULT_API_URL, timeout: float = _PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """(True, its version) when a Prefect server this client can use answers at `api_url`; else
    (False, why not), the reason '' when nothing there answers like a Prefect server."""
    import prefect
    from packaging.version import InvalidVersion, Version

    try:
        if _get_json(f"{api_url}/health", timeout) is not True:
            return False, ""
        served = _get_json(f"{api_url}/admin/version", timeout)
        storage = _get_json(f"{api_url}/admin/storage", timeout)
    except (OSError, ValueError, http.client.HTTPException):  # refused, timed out, not HTTP/JSON
        return False, ""
    try:
        server, client = Version(str(served)), Version(prefect.__version__)
    except InvalidVersion:
        return False, ""
    if server.major != client.major or server < client:
        return False, f"it runs Prefect {server}, this client {client}"
    if not isinstance(storage, dict) or storage.get("default_result_storage_block_id") is not None:
        return False, "it sets a server-wide result storage (this run keeps its results locally)"
    return True, str(server)


@contextmanager
def local_server(api_url: str = DEFAULT_API_URL) -> Iterator[str | None]:
    """Inside: the running local Prefect server at `api_url` as this process's API (yields its URL),
    when `PREFECT_API_URL` is unset and `probe` accepts it; otherwise nothing changes (yields None)
    and Prefect starts its temporary server as usual. Child processes (Dask workers) inherit it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value() or os.environ.get(REUSE_ENV, "1") == "0":
        yield None
        return
    usable, detail = probe(api_url)
    if not usable:
        if detail:
            print(
                f"Not using the Prefect server at {api_url} ({detail}); starting a temporary one.", flush=True
            )
        yield None
        return
    print(f"Using the Prefect server already running at {api_url} (Prefect {detail}).", flush=True)
    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url
    try:
        with temporary_settings({PREFECT_API_URL: api_url}):
            yield api_url
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before


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
