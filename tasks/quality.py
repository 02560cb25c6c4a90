"""The quality report of a generated dataset: lengths, lexical diversity (distinct-1/2), how alike
the instructions are (mean pairwise ROUGE-L over a seeded sample, as the Self-Instruct paper reports
it), evolution depth and mutation mix. Written to the dataset directory as `quality.md` with PNG
plots, and embedded in the dataset card and the Prefect UI report."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from tasks.filters import rouge_l, words


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


def quality_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    instructions = [r["instruction"] for r in rows if r.get("instruction")]
    responses = [r["response"] for r in rows if r.get("response")]
    return {
        "instruction_words": _lengths(instructions),
        "response_words": _lengths(responses),
        "distinct_1": {
            "instruction": round(distinct_n(instructions, 1), 3),
            "response": round(distinct_n(responses, 1), 3),
        },
        "distinct_2": {
            "instruction": round(distinct_n(instructions, 2), 3),
            "response": round(distinct_n(responses, 2), 3),
        },
        "mean_pairwise_rouge_l": round(mean_pairwise_rouge_l(instructions), 3),
        "evol_depth": dict(sorted(Counter(r.get("evol_depth", 0) for r in rows).items())),
        "mutations": dict(Counter(m for r in rows for m in r.get("mutations", [])).most_common()),
    }


def quality_markdown(metrics: dict[str, Any]) -> str:
    lines = ["## Quality", "", "| metric | instruction | response |", "|---|---|---|"]
    for name in ("min", "median", "mean", "max"):
        lines.append(
            f"| words ({name}) | {metrics['instruction_words'][name]} | {metrics['response_words'][name]} |"
        )
    for name in ("distinct_1", "distinct_2"):
        lines.append(f"| {name} | {metrics[name]['instruction']} | {metrics[name]['response']} |")
    lines += [
        "",
        f"Mean pairwise ROUGE-L of instructions (sampled): {metrics['mean_pairwise_rouge_l']}",
        "",
        f"Evolution depth: {metrics['evol_depth']}",
        "",
        f"Mutation mix: {metrics['mutations'] or 'none'}",
    ]
    return "\n".join(lines)


def write_plots(rows: list[dict[str, Any]], directory: Path) -> list[str]:
    """Length histograms and the evolution-depth bar chart as PNG files; returns their names."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, column in zip(axes, ("instruction", "response")):
        ax.hist([len(words(r.get(column) or "")) for r in rows] or [0], bins=20, color="#4c72b0")
        ax.set_title(f"{column} length (words)")
    fig.tight_layout()
    fig.savefig(directory / "lengths.png", dpi=80)
    plt.close(fig)
    depth = Counter(r.get("evol_depth", 0) for r in rows)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.bar([str(k) for k in sorted(depth)], [depth[k] for k in sorted(depth)], color="#55a868")
    ax.set_title("evolution depth")
    fig.tight_layout()
    fig.savefig(directory / "evol_depth.png", dpi=80)
    plt.close(fig)
    return ["lengths.png", "evol_depth.png"]
