"""What a run shows in the Prefect UI: a progress bar for the whole run, advanced after each stage
(`RunProgress`); one per stage, in rows, with the time left (`StageProgress`, fed by
tasks/pipeline/progress.py); a table of sample rows (every generated column, conversations turn
by turn); and the run's report as markdown."""

from __future__ import annotations

import time
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from tasks.quality.metrics import conversation_text, generated


def artifact_key(flow: str, what: str) -> str:
    """Artifact keys allow only lowercase letters, digits and dashes."""
    return f"{flow}-{what}".replace("_", "-").lower()


class RunProgress:
    """A progress artifact for a whole run of `total` stages, advanced as each one finishes."""

    def __init__(self, flow: str, total: int) -> None:
        self.total, self.done = max(total, 1), 0
        self.id = create_progress_artifact(
            0.0, key=artifact_key(flow, "progress"), description=f"{flow}: starting"
        )

    def advance(self, stage: str) -> None:
        self.done += 1
        update_progress_artifact(self.id, 100.0 * self.done / self.total, description=f"finished {stage}")


def time_left(elapsed: float, done: int, total: int) -> float | None:
    """Seconds left at the rate so far; None before the first unit or after the last."""
    return elapsed / done * (total - done) if 0 < done < total else None


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def progress_line(stage: str, done: int, total: int, unit: str, elapsed: float) -> str:
    """`respond: 64/128 rows done, about 40 s left` (or `... done in 81 s` at the end)."""
    if done >= total:
        return f"{stage}: {done}/{total} {unit} done in {duration(elapsed)}"
    left = time_left(elapsed, done, total)
    return f"{stage}: {done}/{total} {unit} done" + (
        f", about {duration(left)} left" if left is not None else ""
    )


class StageProgress:
    """A progress artifact for one stage of the current flow run (none outside a flow run), keyed
    `<flow>-<stage>-progress`; its description holds the count and the time left. Updates are
    at most one a second (each is an API call), and always the last."""

    def __init__(self, stage: str, total: int, unit: str) -> None:
        from prefect.runtime import flow_run

        self.stage, self.total, self.unit, self.id, self.sent = stage, total, unit, None, 0.0
        if flow_run.get_id() is None:
            return
        key = artifact_key(flow_run.flow_name, f"{stage}-progress")
        self.id = create_progress_artifact(0.0, key=key, description=f"{stage}: 0/{total} {unit}")

    def update(self, done: int, elapsed: float) -> None:
        if self.id is None or (done < self.total and time.monotonic() - self.sent < 1.0):
            return
        self.sent = time.monotonic()
        percent = 100.0 * min(done, self.total) / max(self.total, 1)
        line = progress_line(self.stage, done, self.total, self.unit, elapsed)
        update_progress_artifact(self.id, percent, description=line)


def _brief(text: Any, limit: int = 300) -> str:
    text = conversation_text(text) if isinstance(text, list) else "" if text is None else str(text)
    return text if len(text) <= limit else text[:limit] + "…"


def sample_table(rows: list[dict[str, Any]], k: int = 20) -> list[dict[str, str]]:
    """The first `k` rows as table rows: the seed id, every generated column (a conversation as
    its turns) and the evolution depth, where the rows have them."""
    shown = rows[:k]
    generated_columns = dict.fromkeys(c for row in shown for c in generated(row))
    columns = [c for c in ("seed_id", *generated_columns, "evol_depth") if any(c in r for r in shown)]
    return [{c: _brief(row.get(c), 600 if c == "conversation" else 300) for c in columns} for row in shown]


def publish_report(flow: str, rows: list[dict[str, Any]], summary: dict[str, Any], report: str) -> None:
    """A table artifact with sample rows and a markdown artifact with the run's report."""
    sample = sample_table(rows)
    create_table_artifact(
        sample, key=artifact_key(flow, "sample"), description=f"{len(sample)} of {len(rows)} rows"
    )
    create_markdown_artifact(
        report, key=artifact_key(flow, "report"), description=f"{summary.get('rows', 0)} rows"
    )
