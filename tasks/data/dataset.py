"""Dataset out: a directory with the Hugging Face dataset (`save_to_disk`), a Parquet export in the
Hub's layout (`data/train-*.parquet`, so `load_dataset(dir)` and a Hub upload both work), a JSONL
copy, the drop and failure records, a summary and a dataset card. Written to a temporary sibling and
swapped in whole, in one step (`_swap`), so at every instant the directory holds the previous
dataset or the new one, never half and never neither.

A run never replaces a dataset with an empty one or with one under half its size (a backend that
returned only empty text, prompts longer than the context window): the new one is written beside it,
as `<output_dir>.new`, and the previous one is kept (`replacement_refused`)."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.data.report import evolutions_markdown, techniques_used, truncation, truncation_markdown
from tasks.pipeline import usage
from tasks.rows import Row

SUMMARY_FILE = "summary.json"  # a directory holding this was written by us and may be replaced
MIN_SHARE = 0.5  # a new dataset under this share of the previous one's rows does not replace it


class OutputDirError(ValueError):
    """The output directory cannot be used; the message says how to fix it."""


def _ours(path: Path, versioned: bool) -> bool:
    if (path / SUMMARY_FILE).exists():
        return True
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    return versioned and all((p / SUMMARY_FILE).exists() for p in entries)


def check_output_dir(path: Path, versioned: bool = False) -> Path:
    """Fail before any model call if `path` cannot receive a dataset (or, when `versioned`, a new
    dated version of one)."""
    path = Path(path)
    _restore_interrupted(path)
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
    from tasks.quality.metrics import quality_markdown

    return quality_markdown(summary["quality"]) if "quality" in summary else ""


def versioned_dir(output_dir: Path, when: datetime | None = None) -> Path:
    """A dated sub-directory for scheduled refreshes: each version is kept, none clobbered. A version
    saved within the same second as the last takes the next free second's name (two quick runs, seen
    in the tests, otherwise wrote one directory)."""
    when = when or datetime.now(timezone.utc)
    while (path := Path(output_dir) / when.strftime("%Y-%m-%dT%H%M%SZ")).exists():
        when += timedelta(seconds=1)
    return path


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
    _restore_interrupted(output_dir)
    for sibling in output_dir.parent.glob(f".{output_dir.name}.*-*"):
        pid = sibling.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(sibling, ignore_errors=True)


def _restore_interrupted(output_dir: Path) -> None:
    """Where the two-rename fallback of `_swap` was killed between its renames, the previous
    dataset sits in an `.old-<pid>` sibling and the output directory is missing: put it back."""
    if output_dir.exists() or not output_dir.parent.is_dir():
        return
    for old in sorted(output_dir.parent.glob(f".{output_dir.name}.old-*")):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)) and (old / SUMMARY_FILE).exists():
            old.rename(output_dir)
            return


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux `renameat2` with RENAME_EXCHANGE); False where
    the C library or the filesystem cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap(tmp: Path, output_dir: Path) -> None:
    """Put the finished `tmp` at `output_dir`; the directory there is the old or the new one at
    every instant."""
    if not output_dir.exists():
        tmp.rename(output_dir)
        return
    if _exchange(tmp, output_dir):
        shutil.rmtree(tmp, ignore_errors=True)  # now the previous dataset
        return
    # No atomic exchange (not Linux, or a filesystem without it): two renames, and a crash between
    # them is undone by `_restore_interrupted` on the next run.
    old = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
    output_dir.rename(old)
    tmp.rename(output_dir)
    shutil.rmtree(old, ignore_errors=True)


def replacement_refused(output_dir: Path, rows: int) -> str | None:
    """Why a new dataset of `rows` rows must not replace the one at `output_dir` (None: it may):
    it is empty, or under MIN_SHARE of the previous one's rows."""
    summary = Path(output_dir) / SUMMARY_FILE
    try:
        previous = int(json.loads(summary.read_text())["rows"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if previous == 0 or rows >= previous * MIN_SHARE:
        return None
    return (
        f"this run produced {rows} rows against {previous} in the dataset at {output_dir}, so that "
        f"one is kept and this run's was written beside it ({beside(output_dir)}). Check its "
        f"drops.jsonl for why; to replace the dataset anyway, delete {output_dir} and run the same "
        "command again (finished batches come from the cache)."
    )


def beside(output_dir: Path) -> Path:
    """Where a dataset that may not replace `output_dir` is written instead."""
    return Path(output_dir).with_name(f"{Path(output_dir).name}.new")


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
    from prefect import get_run_logger

    from tasks.data.schema import features_for, table, to_dataset  # imports datasets: only when saving

    output_dir = check_output_dir(Path(output_dir))
    if reason := replacement_refused(output_dir, len(rows)):
        get_run_logger().warning("Not replacing the previous dataset: %s", reason)
        output_dir = check_output_dir(beside(output_dir))
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
        from tasks.quality.metrics import write_plots

        plots = write_plots(rows, tmp, summary["quality"])
        images = "\n\n" + "\n".join(f"![{name}]({name})" for name in plots)
        (tmp / "quality.md").write_text(_quality(summary) + images + "\n", encoding="utf-8")
    with open(tmp / "data.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    for name, records in (("drops.jsonl", drops), ("failures.jsonl", failures)):
        with open(tmp / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in records)
    (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    _swap(tmp, output_dir)
    return output_dir
