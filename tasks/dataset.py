"""Dataset out: a directory with the Hugging Face dataset (`save_to_disk`), a Parquet export in the
Hub's layout (`data/train-*.parquet`, so `load_dataset(dir)` and a Hub upload both work), a JSONL
copy, the drop and failure records, a summary and a dataset card. Written to a temporary sibling and
swapped in whole, so a crash during the save leaves the previous dataset (or nothing), never half."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import usage
from tasks.report import evolutions_markdown, techniques_used, truncation, truncation_markdown
from tasks.rows import Row

MARKER = "summary.json"  # a directory holding this was written by us and may be replaced


class OutputDirError(ValueError):
    """The output directory cannot be used; the message says how to fix it."""


def _ours(path: Path, versioned: bool) -> bool:
    if (path / MARKER).exists():
        return True
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    return versioned and all((p / MARKER).exists() for p in entries)


def check_output_dir(path: Path, versioned: bool = False) -> Path:
    """Fail before any model call if `path` cannot receive a dataset (or, when `versioned`, a new
    dated version of one)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"--output-dir {path} is a file. Pass a directory path.")
    if path.is_dir() and any(path.iterdir()) and not _ours(path, versioned):
        raise OutputDirError(
            f"--output-dir {path} is a non-empty directory that this tool did not write. "
            "Pass a new or empty directory; nothing is ever written over other files."
        )
    return path


def report_markdown(summary: dict[str, Any]) -> str:
    """The run's counts as markdown (the Prefect UI report; the card embeds the same numbers)."""
    stages = "\n".join(f"| {k} | {v} |" for k, v in summary["rows_per_stage"].items())
    drops = "\n".join(f"| {k} | {v} |" for k, v in summary["drops"].items()) or "| none | 0 |"
    sections = [
        f"# {summary['rows']} rows",
        f"| stage | kept |\n|---|---|\n{stages}",
        evolutions_markdown(summary),
        truncation_markdown(summary),
        f"| dropped: stage:reason | count |\n|---|---|\n{drops}",
        f"Rows that failed with errors: {summary['failures']}",
        _quality(summary),
        usage.markdown(summary.get("usage", {})),
    ]
    return "\n\n".join(s for s in sections if s)


def _quality(summary: dict[str, Any]) -> str:
    from tasks.quality import quality_markdown

    return quality_markdown(summary["quality"]) if "quality" in summary else ""


def versioned_dir(output_dir: Path, when: datetime | None = None) -> Path:
    """A dated sub-directory for scheduled refreshes: each version is kept, none clobbered."""
    when = when or datetime.now(timezone.utc)
    return Path(output_dir) / when.strftime("%Y-%m-%dT%H%M%SZ")


def summarize(rows: list[Row], ledger: Any, seeds: int) -> dict:
    """Counts for the console, summary.json and the dataset card: rows after each stage, drops by
    stage and reason, failures (rows a rerun will try again), the techniques that ran and, per
    stage, the outputs that hit the token limit."""
    reasons = Counter(f"{d['stage']}:{d['reason']}" for d in ledger.drops)
    return {
        "rows": len(rows),
        "rows_per_stage": {"seeds": seeds, **ledger.counts, "final": len(rows)},
        "drops": dict(sorted(reasons.items())),
        "failures": len(ledger.failures),
        "techniques": techniques_used(rows, ledger.counts, ledger.drops),
        "truncation": truncation(rows, ledger.drops),
        "usage": usage.summary(getattr(ledger, "usage", {})),
    }


def _remove_stale_siblings(output_dir: Path) -> None:
    """Half-written directories left by a save that was killed (their process is gone)."""
    for sibling in output_dir.parent.glob(f".{output_dir.name}.*-*"):
        pid = sibling.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(sibling, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@task(name="save_dataset", cache_policy=NO_CACHE, persist_result=False)
def save_dataset(
    rows: list[Row],
    drops: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    summary: dict[str, Any],
    output_dir: Path,
    card: str = "",
) -> Path:
    from tasks.schema import features_for, table, to_dataset  # imports datasets: only when saving

    output_dir = check_output_dir(Path(output_dir))
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(output_dir)
    tmp = output_dir.with_name(f".{output_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    features = features_for(summary.get("flow", ""), rows)  # the flow's declared schema
    records = table(rows, features)
    data = to_dataset(rows, features)
    data.save_to_disk(str(tmp / "dataset"))
    (tmp / "data").mkdir()
    data.to_parquet(str(tmp / "data" / "train-00000-of-00001.parquet"))
    (tmp / "README.md").write_text(card, encoding="utf-8")
    if "quality" in summary:
        from tasks.quality import write_plots

        plots = write_plots(rows, tmp, summary["quality"])
        images = "\n\n" + "\n".join(f"![{name}]({name})" for name in plots)
        (tmp / "quality.md").write_text(_quality(summary) + images + "\n", encoding="utf-8")
    with open(tmp / "data.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    for name, records in (("drops.jsonl", drops), ("failures.jsonl", failures)):
        with open(tmp / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in records)
    (tmp / MARKER).write_text(json.dumps(summary, indent=2) + "\n")
    old = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
    if output_dir.exists():
        output_dir.rename(old)
    tmp.rename(output_dir)
    shutil.rmtree(old, ignore_errors=True)
    return output_dir
