"""Dated versions of a scheduled refresh (`versioned=True`): a `latest` pointer to the newest good
one and a retention limit.

`<output_dir>/latest` is a relative symbolic link to the newest version's directory, swapped in
one step (a new link renamed over the old), so a reader that opens `latest/` gets a whole version,
never none. A version that is empty, or under half the rows of the one `latest` points to, is kept
but not pointed to (the same rule that keeps a plain output directory from being replaced).
Retention (`keep_versions`) deletes the oldest dated versions beyond the newest N, never the one
`latest` points to.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from tasks.data.dataset import SUMMARY_FILE, replacement_refused

LATEST = "latest"
VERSION = re.compile(r"\d{4}-\d{2}-\d{2}T\d{6}Z")  # tasks.data.dataset.versioned_dir's names


def versions(output_dir: Path) -> list[Path]:
    """The dated versions under `output_dir` that hold a whole dataset, oldest first."""
    if not Path(output_dir).is_dir():
        return []
    found = [p for p in Path(output_dir).iterdir() if VERSION.fullmatch(p.name) and not p.is_symlink()]
    return sorted((p for p in found if (p / SUMMARY_FILE).exists()), key=lambda p: p.name)


def latest(output_dir: Path) -> Path | None:
    """The version `latest` points to, if any."""
    link = Path(output_dir) / LATEST
    return link.resolve() if link.is_symlink() and link.exists() else None


def point_latest(version: Path, rows: int) -> str | None:
    """Point `<output_dir>/latest` at `version` (a dataset of `rows` rows); returns why it was not
    moved (None when it was)."""
    link = version.parent / LATEST
    if (current := latest(version.parent)) is not None and replacement_refused(current, rows):
        return f"{LATEST} still points to {current.name}: this version has {rows} rows, far fewer"
    if rows == 0:
        return f"{LATEST} not moved: this version has no rows"
    tmp = version.parent / f".{LATEST}.tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(version.name)  # relative: the tree can be moved or mounted elsewhere
    os.replace(tmp, link)
    return None


def prune(output_dir: Path, keep: int) -> list[str]:
    """Delete the oldest dated versions beyond the newest `keep` (never the one `latest` points
    to); returns the names deleted."""
    pinned = latest(output_dir)
    old = versions(output_dir)[:-keep] if keep > 0 else []
    deleted = [p for p in old if p.resolve() != pinned]
    for path in deleted:
        shutil.rmtree(path)
    return [p.name for p in deleted]
