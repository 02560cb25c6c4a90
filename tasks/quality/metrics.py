"""The quality report of a generated dataset, for every text field the rows have (a flow's
instruction and response, every turn of a conversation, the columns of a flow composed by hand):
lengths, lexical diversity (distinct-1/2), how alike the texts are (mean pairwise ROUGE-L over a
seeded sample, as the Self-Instruct paper reports it for instructions) and, after EvolInstruct,
evolution depth and mutation mix. Written to the dataset directory as `quality.md` with PNG
plots, and embedded in the dataset card and the Prefect UI report."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from tasks.quality.filters import rouge_l, words

# Columns that hold provenance or the seed a row was made from, not generated text.
NOT_GENERATED = frozenset(
    {"id", "seed_id", "model", "backend", "generation", "system_prompt", "system_prompt_key"}
    | {"chat_template", "chat_template_source", "context", "seed_instruction"}
)


def distinct_n(texts: list[str], n: int) -> float:
    """Unique n-grams / all n-grams over `texts` (Li et al., 2016); 0 for no n-grams."""
    grams = [tuple(t[i : i + n]) for t in map(words, texts) for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def mean_pairwise_rouge_l(texts: list[str], pairs: int = 300, seed: int = 0) -> float:
    if len(texts) < 2:
        return 0.0
    rng = random.Random(seed)
    sampled = [rng.sample(range(len(texts)), 2) for _ in range(pairs)]
    return statistics.fmean(rouge_l(texts[i], texts[j]) for i, j in sampled)


def _lengths(texts: list[str]) -> dict[str, float]:
    counts = [len(words(t)) for t in texts] or [0]
    return {
        "min": min(counts),
        "median": statistics.median(counts),
        "mean": round(statistics.fmean(counts), 1),
        "max": max(counts),
    }


def generated(row: dict[str, Any]) -> dict[str, Any]:
    """The row's generated content: its text columns (provenance and seed text left out) and its
    conversation, if it has one."""
    return {
        c: v
        for c, v in row.items()
        if c not in NOT_GENERATED and (isinstance(v, str) or (c == "conversation" and isinstance(v, list)))
    }


def conversation_text(messages: list[dict[str, Any]]) -> str:
    """A conversation as plain text, one `role: content` paragraph per turn."""
    return "\n\n".join(f"{m.get('role')}: {m.get('content')}" for m in messages)


def text_fields(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Every generated text of `rows`, by field: each text column (a flow's or a user's own), and
    for conversations every user turn and every assistant turn; provenance and seed text left out."""
    fields: dict[str, list[str]] = {}
    for row in rows:
        for column, value in row.items():
            if column in NOT_GENERATED:
                continue
            if isinstance(value, str) and value.strip():
                fields.setdefault(column, []).append(value)
            elif column == "conversation" and isinstance(value, list):
                for turn in value:
                    if turn.get("role") in ("user", "assistant") and (turn.get("content") or "").strip():
                        fields.setdefault(f"{turn['role']}_turns", []).append(turn["content"])
    return fields


def quality_metrics(rows: list[dict[str, Any]], evolved: bool = False) -> dict[str, Any]:
    """Per text field: length in words, distinct-1/2 and mean pairwise ROUGE-L; with `evolved`
    (EvolInstruct ran), the evolution depth and mutation mix as well."""
    fields = text_fields(rows)
    metrics: dict[str, Any] = {
        "fields": list(fields),
        "texts": {f: len(t) for f, t in fields.items()},
        "words": {f: _lengths(t) for f, t in fields.items()},
        "distinct_1": {f: round(distinct_n(t, 1), 3) for f, t in fields.items()},
        "distinct_2": {f: round(distinct_n(t, 2), 3) for f, t in fields.items()},
        "mean_pairwise_rouge_l": {f: round(mean_pairwise_rouge_l(t), 3) for f, t in fields.items()},
    }
    if evolved:
        metrics["evol_depth"] = dict(sorted(Counter(r.get("evol_depth", 0) for r in rows).items()))
        metrics["mutations"] = dict(Counter(m for r in rows for m in r.get("mutations") or []).most_common())
    return metrics


def quality_markdown(metrics: dict[str, Any]) -> str:
    fields = metrics.get("fields", [])
    if not fields:
        return "## Quality\n\nNo generated text to measure."
    lines = ["## Quality", "", f"| metric | {' | '.join(fields)} |", "|---" * (len(fields) + 1) + "|"]
    for name in ("min", "median", "mean", "max"):
        lines.append(
            f"| words ({name}) | " + " | ".join(str(metrics["words"][f][name]) for f in fields) + " |"
        )
    for name in ("distinct_1", "distinct_2", "mean_pairwise_rouge_l"):
        lines.append(f"| {name} | " + " | ".join(str(metrics[name][f]) for f in fields) + " |")
    lines += ["", "ROUGE-L is averaged over 300 sampled pairs of texts (lower: more diverse)."]
    if "evol_depth" in metrics:
        lines += ["", f"Evolution depth: {metrics['evol_depth']}", ""]
        lines.append(f"Mutation mix: {metrics['mutations'] or 'none'}")
    return "\n".join(lines)


def plot_names(metrics: dict[str, Any]) -> list[str]:
    """The PNG files `write_plots` writes for these metrics (the card links them)."""
    return ["lengths.png"] * bool(metrics.get("fields")) + ["evol_depth.png"] * ("evol_depth" in metrics)


def write_plots(
    rows: list[dict[str, Any]], directory: Path, metrics: dict[str, Any] | None = None
) -> list[str]:
    """A length histogram per text field and, after EvolInstruct, the evolution-depth bar chart,
    as PNG files in `directory`; returns their names."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    metrics = metrics or quality_metrics(rows)
    fields = text_fields(rows)
    if fields:
        fig, axes = plt.subplots(1, len(fields), figsize=(4.5 * len(fields), 3.2), squeeze=False)
        for ax, (field, texts) in zip(axes[0], fields.items()):
            ax.hist([len(words(t)) for t in texts], bins=20, color="#4c72b0")
            ax.set_title(f"{field} length (words)")
        fig.tight_layout()
        fig.savefig(directory / "lengths.png", dpi=80)
        plt.close(fig)
    if "evol_depth" in metrics:
        depth = metrics["evol_depth"]
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.bar([str(k) for k in depth], list(depth.values()), color="#55a868")
        ax.set_title("evolution depth")
        fig.tight_layout()
        fig.savefig(directory / "evol_depth.png", dpi=80)
        plt.close(fig)
    return plot_names(metrics)
