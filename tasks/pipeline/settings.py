"""Environment defaults that make Prefect's temporary server work on a busy 2-core machine and keep
the console free of messages a user cannot act on. A value the user set always wins."""

import os
import warnings

DEFAULTS = {
    # The temporary server starts in 11-21 s here (longer on a first run, which migrates its SQLite
    # database); Prefect's default timeout of 20 s fails whenever the cores are busy.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
    # No telemetry unless the user asks for it (DO_NOT_TRACK=0, PREFECT_SERVER_ANALYTICS_ENABLED=true):
    # the server's heartbeat (offline it logs 'database is locked' tracebacks) and the client's
    # usage events and first-import notice, which follow DO_NOT_TRACK only.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # At shutdown the temporary server logs an event-flush CancelledError traceback.
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
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
