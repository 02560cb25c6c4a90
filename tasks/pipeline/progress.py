"""Progress of a long stage on the command line: a live progress bar while the console is a
terminal, plain log lines otherwise (CI, deployments, pytest, a log file), where a bar's control
codes would only be noise.

The bar is drawn on the Console of Prefect's own console log handler (rich, which Prefect already
uses): rich then prints each log line above the bar, whole, instead of through it, and clears the
bar when the stage ends (transient), so what stays on screen is the log, plus one line with the
stage's count and time. `stage_progress` yields `advance(n)`; the stage calls it as work finishes.
Inside a flow run every stage also has a progress artifact in the UI (tasks/pipeline/artifacts.py), with the
count and the time left at the rate so far, as the log lines have.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect.logging.handlers import PrefectConsoleHandler
from rich.console import Console
from rich.default_styles import DEFAULT_STYLES
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.theme import Theme

from tasks.pipeline.artifacts import StageProgress, progress_line

_BAR_STYLES = Theme({k: v for k, v in DEFAULT_STYLES.items() if k.startswith(("bar.", "progress."))})


def _logger() -> Any:
    try:
        return get_run_logger()
    except MissingContextError:  # outside a flow: a notebook, a benchmark
        return logging.getLogger("instructforge")


def terminal_handler() -> PrefectConsoleHandler | None:
    """Prefect's console log handler when it writes to a terminal, else None."""
    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                console = handler.console
                return handler if console.is_terminal and not console.is_dumb_terminal else None
    return None


def terminal_console() -> Console | None:
    """The Console of Prefect's console log handler when it writes to a terminal, else None."""
    handler = terminal_handler()
    return handler.console if handler else None


@contextmanager
def stage_progress(
    stage: str,
    total: int,
    unit: str = "batches",
    min_total: int = 2,
    log_every: int = 1,
    console: Console | None = None,
) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n=1)`, to call as `n` of the stage's `total` units finish. A terminal gets a
    bar (on `console`, default: Prefect's, if it is a terminal); anything else a log line each
    `log_every` units and at the end, with the time left. Stages under `min_total` units show
    nothing on the console; in a flow run, the UI shows every stage."""
    logger, done, start = _logger(), 0, time.perf_counter()
    handler = None if console else terminal_handler()
    console = console or (handler.console if handler else None)
    ui = StageProgress(stage, total, unit) if total > 0 else None

    def show(n: int) -> None:
        nonlocal done
        done += n
        if ui:
            ui.update(done, time.perf_counter() - start)

    if total < min_total:
        yield show
        return
    if console is None:

        def log(n: int = 1) -> None:
            before = done
            show(n)
            if done < total and done // log_every > before // log_every:
                logger.info(progress_line(stage, done, total, unit, time.perf_counter() - start))

        yield log
        logger.info(progress_line(stage, done, total, unit, time.perf_counter() - start))
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    # subtle: the bar starts, redraws and stops holding the log handler's lock, so no log line is
    # half printed meanwhile. A log line is printed with the bar drawn again below it; one that a
    # task thread had begun while the bar was live, and wrote after the bar was cleared, drew the
    # bar again for good (seen when a stage's batches all ended within a few milliseconds).
    lock = handler.lock if handler and handler.lock else nullcontext()
    progress = Progress(*columns, console=console, transient=True, auto_refresh=False)
    # Prefect's console has only its own log styles; the bar's come from rich's defaults.
    with console.use_theme(_BAR_STYLES):
        with lock:
            progress.start()
            task = progress.add_task(stage, total=total)
        try:

            def advance(n: int = 1) -> None:
                show(n)
                with lock:
                    progress.advance(task, n)
                    progress.refresh()

            yield advance
        finally:
            with lock:
                progress.stop()
    logger.info(progress_line(stage, done, total, unit, time.perf_counter() - start))
