"""Two runs side by side: the second half of "evaluate, then iterate on the prompt".

    python -m tasks.compare output/before output/after [--output compare.md]

Reads each dataset directory's `summary.json` (counts, drops by stage and reason, failures, the
quality metrics, the prompt overrides, the flow parameters) and `data.jsonl` (the share of each
`*_truncated` column that is true), and prints markdown tables: each metric for run A, run B and
the change B - A (of the parameters, only those that differ). Whatever numbers a flow adds to its
summary are compared too, so the table follows the report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# Sections of the table, by the summary key a metric starts with; anything else goes in "other".
SECTIONS = {
    "rows": "counts",
    "rows_per_stage": "counts",
    "failures": "counts",
    "drops": "dropped (stage:reason)",
    "truncated": "hit the token limit (share of rows)",
    "quality": "quality",
    "prompt_overrides": "prompt templates replaced (sha256)",
    "parameters": "flow parameters that differ",
}
# Summary keys that say where a run went, not what it made.
SKIP = frozenset({"output_dir", "hub_commit", "hub_url", "pre_query", "rounds"})


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out |= _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(value, list):
        return {}  # per-round tables and the like: in the reports themselves
    return {prefix: value}


def _truncation(directory: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in open(directory / "data.jsonl", encoding="utf-8") if line.strip()]
    columns = sorted({c for row in rows for c in row if c.endswith("_truncated")})
    return {
        f"truncated.{c.removesuffix('_truncated')}": round(sum(bool(r.get(c)) for r in rows) / len(rows), 3)
        for c in columns
    }


def metrics(directory: str | Path) -> dict[str, Any]:
    """Every comparable figure of one run's dataset directory, by dotted name."""
    directory = Path(directory)
    if not (directory / "summary.json").is_file():
        raise ValueError(_missing(directory))
    summary = json.loads((directory / "summary.json").read_text(encoding="utf-8"))
    overrides = summary.pop("prompt_overrides", None) or {}
    parameters = summary.pop("parameters", None) or {}
    summary = {k: v for k, v in summary.items() if k not in SKIP}
    found = _flatten(summary, "")
    found |= {f"prompt_overrides.{name}": info["sha256"][:12] for name, info in overrides.items()}
    found |= {f"parameters.{name}": _scalar(value) for name, value in parameters.items()}
    if (directory / "data.jsonl").is_file():
        found |= _truncation(directory)
    return found


def _scalar(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _missing(directory: Path) -> str:
    versions = sorted(p.parent.name for p in directory.glob("*/summary.json"))
    if versions:  # the parent of --versioned runs
        return f"{directory} holds dated versions; pass one of them, e.g. {directory / versions[-1]}."
    return (
        f"{directory} is not a dataset directory written by instructforge (no summary.json). "
        "Pass the --output-dir of a finished run."
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _change(a: Any, b: Any) -> str:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        delta = round(b - a, 3)
        return "0" if delta == 0 else f"{delta:+g}"
    if a is None and b is None:
        return ""
    return "same" if a == b else "changed"


def compare_markdown(a: str | Path, b: str | Path) -> str:
    """The markdown table of run `a` against run `b` (a metric one run lacks shows as `-`; a
    drop reason one run never hit counts 0)."""
    first, second = metrics(a), metrics(b)
    for found, other in ((first, second), (second, first)):
        found |= {k: 0 for k in other if k.startswith("drops.") and k not in found}
    lines = [f"# Runs compared\n\nA: `{a}`\n\nB: `{b}`"]
    by_section: dict[str, list[str]] = {}
    for name in sorted(first.keys() | second.keys(), key=_order(first, second)):
        section = SECTIONS.get(name.split(".")[0], "other")
        va, vb = first.get(name), second.get(name)
        if section == SECTIONS["parameters"] and va == vb:
            continue
        shown = name.split(".", 1)[1] if section != "counts" and "." in name else name
        by_section.setdefault(section, []).append(
            f"| {shown} | {_cell(va)} | {_cell(vb)} | {_change(va, vb)} |"
        )
    for section in dict.fromkeys([*SECTIONS.values(), "other"]):
        if section in by_section:
            lines.append(f"\n## {section}\n\n| metric | A | B | B - A |\n|---|---|---|---|")
            lines += by_section[section]
    return "\n".join(lines) + "\n"


def _order(first: dict[str, Any], second: dict[str, Any]):
    """Each run's own order (stages in pipeline order), A's first."""
    position = {name: i for i, name in enumerate([*first, *(k for k in second if k not in first)])}
    return lambda name: position[name]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.compare", description="Put two runs' reports side by side (B - A)."
    )
    parser.add_argument("a", help="dataset directory of the earlier run (A)")
    parser.add_argument("b", help="dataset directory of the later run (B)")
    parser.add_argument("--output", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    try:
        table = compare_markdown(args.a, args.b)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(table, end="")
    if args.output:
        Path(args.output).write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
