"""Does answering with the seed passage at hand lower invented facts? (run by hand)

SelfInstruct writes questions from each passage (the shipped ones and bench/passages/), then every
question is answered twice by the same model with the same sampling: once with `respond.jinja`
(the question alone) and once with `respond_grounded.jinja` (the passage as reference material).
A *fact* is a number, a year or a capitalized name inside a sentence; a fact is *unsupported* when
it appears in neither the passage nor the question. Side by side in one run, the script prints per
condition: facts per response, unsupported facts per response, the share of responses with at
least one unsupported fact, and the share of unsupported numbers (where a contradiction is
plainest: "signed in 1861" against a passage that says 1648).

It also counts the answers `unsupported_figure` (tasks/quality/figures.py) flags in each condition:
a figure of two or more digits that neither the passage nor the question states.

    python bench/grounding.py                       # the embedded model, about 10 minutes
    python bench/grounding.py --num-instructions 2 --json docs/grounding.json
    python bench/grounding.py --passages bench/passages/dated_events.jsonl --seeds 0 1 --answer-seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tasks  # noqa: E402,F401  (Prefect defaults before prefect is imported)
from tasks.backends import GenerationParams, get_backend  # noqa: E402
from tasks.backends.embedded import EMBEDDED_MODEL  # noqa: E402
from tasks.data.seeds import load_seeds  # noqa: E402
from tasks.generate import build_messages  # noqa: E402
from tasks.passage_queries import generate_instructions  # noqa: E402
from tasks.quality.figures import unsupported_figure  # noqa: E402
from tasks.respond import GROUNDED_TEMPLATE, TEMPLATE  # noqa: E402

PASSAGES = [ROOT / "data" / "seed_contexts.jsonl", ROOT / "bench" / "passages" / "other_domains.jsonl"]
_NUMBER = re.compile(r"\b\d[\d,.]*\d\b|\b\d\b")
_NAME = re.compile(r"(?<=[a-z,;:] )[A-Z][a-zA-Z]+")  # a capitalized word inside a sentence


def facts(text: str) -> tuple[set[str], set[str]]:
    """(numbers, names) stated in `text`, normalized."""
    numbers = {n.replace(",", "").rstrip(".") for n in _NUMBER.findall(text)}
    return numbers, {name.lower() for name in _NAME.findall(text)}


def unsupported(response: str, source: str) -> tuple[int, int, int]:
    """(facts, unsupported facts, unsupported numbers) of a response against its passage and question."""
    numbers, names = facts(response)
    known_numbers, _ = facts(source)
    lowered = source.lower()
    bad_numbers = {n for n in numbers if n not in known_numbers}
    bad_names = {n for n in names if n not in lowered}
    return len(numbers) + len(names), len(bad_numbers) + len(bad_names), len(bad_numbers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--backend", default="transformers")
    parser.add_argument("--num-instructions", type=int, default=3)
    parser.add_argument("--passages", nargs="+", default=[str(p) for p in PASSAGES], help="seed files")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="SelfInstruct's seeds")
    parser.add_argument(
        "--answer-seeds", nargs="+", type=int, default=[0], help="each question answered with each"
    )
    parser.add_argument("--json", help="also write the figures and every answer pair to this file")
    args = parser.parse_args()

    seeds = [row for path in args.passages for row in load_seeds(str(path), "context")]
    model = {"model": args.model, "backend": args.backend}
    rows = []
    for seed in args.seeds:
        params = GenerationParams(max_new_tokens=256, temperature=0.7, seed=seed)
        made = generate_instructions.fn(
            seeds, str(seed), num_instructions=args.num_instructions, params=params, **model
        )
        rows += made["rows"]
    llm = get_backend(args.backend, args.model)
    answered = rows * len(args.answer_seeds)  # each question once per answer seed, in that order
    results = {}
    for name, template in (("ungrounded", TEMPLATE), ("grounded", GROUNDED_TEMPLATE)):
        outputs = []
        for seed in args.answer_seeds:  # the instruct flow's sampling
            answer = GenerationParams(max_new_tokens=256, temperature=0.3, seed=seed)
            outputs += llm.generate([build_messages(row, template) for row in rows], answer)
        sources = [row["context"] + " " + row["instruction"] for row in answered]
        scores = [unsupported(out.text, source) for source, out in zip(sources, outputs)]
        flagged = [bool(unsupported_figure(out.text, source)) for source, out in zip(sources, outputs)]
        total_words = sum(len(out.text.split()) for out in outputs)
        results[name] = {
            "responses": len(answered),
            "words_per_response": round(total_words / len(answered), 1),
            "facts_per_response": round(statistics.fmean(s[0] for s in scores), 2),
            "unsupported_per_response": round(statistics.fmean(s[1] for s in scores), 2),
            "responses_with_unsupported": round(sum(s[1] > 0 for s in scores) / len(scores), 3),
            "unsupported_numbers_per_response": round(statistics.fmean(s[2] for s in scores), 2),
            # Grounded answers run shorter; these two do not reward length.
            "unsupported_per_100_words": round(100 * sum(s[1] for s in scores) / max(total_words, 1), 2),
            "share_of_facts_unsupported": round(
                sum(s[1] for s in scores) / max(sum(s[0] for s in scores), 1), 3
            ),
            "flagged_unsupported_figure": sum(flagged),
            "answers": [out.text for out in outputs],
            "flagged": flagged,
        }
    print(f"{len(rows)} questions from {len(seeds)} passages, model {args.model}")
    print(f"{'':32}{'ungrounded':>12}{'grounded':>12}")
    for key in [k for k in results["grounded"] if k not in ("answers", "flagged")]:
        print(f"{key:32}{results['ungrounded'][key]:>12}{results['grounded'][key]:>12}")
    if args.json:
        pairs = [
            {
                "seed_id": r["seed_id"],
                "instruction": r["instruction"],
                "ungrounded": u,
                "grounded": g,
                "flagged": f,
            }
            for r, u, g, f in zip(
                answered,
                results["ungrounded"]["answers"],
                results["grounded"]["answers"],
                results["grounded"]["flagged"],
            )
        ]
        summary = {
            k: {m: v for m, v in res.items() if m not in ("answers", "flagged")} for k, res in results.items()
        }
        Path(args.json).write_text(json.dumps({"summary": summary, "pairs": pairs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
