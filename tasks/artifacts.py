"""What a run shows in the Prefect UI: a progress bar advanced after each stage, a table of sample
rows (every generated column, conversations turn by turn), and the run's report as markdown."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from tasks.quality import conversation_text, generated


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
