"""Settings that keep the console free of messages a user cannot act on, and let Prefect's temporary
server start on a busy 2-core machine. A value the user set always wins.

Prefect's own settings live in prefect.toml at the repository root, which Prefect reads from the
working directory; `project_settings` applies them to a flow started from another directory. The
Hugging Face defaults below are environment variables those libraries read when they are imported:
importing any `tasks` module sets them first (tasks/__init__.py), so they need no import order.
"""

from __future__ import annotations

import os
import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

PROJECT_SETTINGS = Path(__file__).resolve().parents[2] / "prefect.toml"

DEFAULTS = {
    # Prefect's client sends usage events unless DO_NOT_TRACK is set (it reads it at each event).
    "DO_NOT_TRACK": "1",
    # Ids and loaded models are passed explicitly; never a pickled model.
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    # Not set here: OMP_WAIT_POLICY. PASSIVE (threads sleep at once after each parallel op) made
    # every one of a decode step's ~1,200 small ops wait for a thread to wake: steps ran 20-25%
    # slower on a quiet machine (bench/generation.py). On cores shared with other processes the
    # engine measures 1 thread against all and keeps the faster (tasks/backends/engine/scheduler.py).
}


def apply_defaults() -> None:
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    # Pydantic/Prefect deprecation chatter a dataset user can do nothing about.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*pkg_resources.*")


def _names(table: dict[str, Any], prefix: str = "PREFECT") -> dict[str, Any]:
    """prefect.toml's tables as setting names: [server.ephemeral] startup_timeout_seconds is
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}_{key.upper()}"
        out.update(_names(value, name) if isinstance(value, dict) else {name: value})
    return out


def project_settings(cwd: Path | None = None) -> AbstractContextManager:
    """The project's prefect.toml as temporary Prefect settings, for a run started from a directory
    without a prefect.toml of its own (Prefect reads it from the working directory only); settings
    set in the environment are left alone."""
    if (Path(cwd or Path.cwd()) / "prefect.toml").exists() or not PROJECT_SETTINGS.exists():
        return nullcontext()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    import prefect.settings
    from prefect.settings import temporary_settings

    values = _names(tomllib.loads(PROJECT_SETTINGS.read_text(encoding="utf-8")))
    updates = {
        getattr(prefect.settings, name): value
        for name, value in values.items()
        if name not in os.environ and hasattr(prefect.settings, name)
    }
    return temporary_settings(updates=updates)
