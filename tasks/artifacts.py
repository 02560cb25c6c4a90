"""What a run shows in the Prefect UI: a progress bar advanced after each stage, a table of sample
rows, and the run's report as markdown."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)


def artifact_key(flow: str, what: str) -> str:
    """Artifact keys allow only lowercase letters, digits and dashes."""
    return f"{flow}-{what}".replace("_", "-").lower()


class Progress:
    """A progress artifact for a run of `total` stages."""

    def __init__(self, flow: str, total: int) -> None:
        self.total, self.done = max(total, 1), 0
        self.id = create_progress_artifact(
            0.0, key=artifact_key(flow, "progress"), description=f"{flow}: starting"
        )

    def advance(self, stage: str) -> None:
        self.done += 1
        update_progress_artifact(self.id, 100.0 * self.done / self.total, description=f"finished {stage}")


def _brief(text: Any, limit: int = 300) -> str:
    text = str(text or "")
    return text if len(text) <= limit else text[:limit] + "…"


def publish_report(flow: str, rows: list[dict[str, Any]], summary: dict[str, Any], report: str) -> None:
    """A table artifact with sample rows and a markdown artifact with the run's report."""
    columns = [c for c in ("seed_id", "instruction", "response", "evol_depth") if rows and c in rows[0]]
    sample = [{c: _brief(row.get(c)) for c in columns} for row in rows[:20]]
    create_table_artifact(
        sample, key=artifact_key(flow, "sample"), description=f"{len(sample)} of {len(rows)} rows"
    )
    create_markdown_artifact(
        report, key=artifact_key(flow, "report"), description=f"{summary.get('rows', 0)} rows"
    )
