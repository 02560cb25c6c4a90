"""Benchmark: ROUGE-L near-duplicate removal (Self-Instruct's 0.7 rule against kept instructions)
with the exact `NearDuplicateIndex`, the `MinHashIndex` (LSH candidates confirmed exactly) and
brute force, in one run: a 100k-row dataset-level pass, its recall judged exactly on a sample,
the cost of one check at 10k and ~85k instructions, and the LSH's pair recall by ROUGE-L.

    PYTHONPATH=. python bench/near_duplicates.py [--rows 100000] [--sample 300] [--compare 10000]

Instructions are synthetic but shaped like real ones: a leading verb, function words ("the",
"a", "of") in a third of the positions (the worst case for an inverted index and for MinHash),
Zipf-distributed content words from the shipped seed data (375 of them: pessimistic, a real set of
100k instructions has far more, hence fewer chance candidates), and 15% paraphrases of earlier
instructions (1-4 edits: a word replaced, added, removed or moved, another verb, a polite opening,
a qualifier). The last line is a JSON object to compare runs over time.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from itertools import accumulate
from pathlib import Path

from tasks.quality import minhash
from tasks.quality.filters import lcs_length, rouge_l_tokens, words
from tasks.quality.minhash_index import MinHashIndex, lsh_parameters
from tasks.quality.near_duplicates import (
    NearDuplicateIndex,
    brute_force_find,
    drop_near_duplicates,
    near_duplicate_index,
)

DATA = Path(__file__).resolve().parents[1] / "data"
VERBS = "write explain list describe summarize compare suggest create give rewrite plan design find".split()
FUNCTION = "the a of to for and in with about that how is on your".split()


def vocabulary() -> list[str]:
    text = " ".join(
        " ".join(str(v) for v in json.loads(line).values() if isinstance(v, str))
        for name in ("seed_tasks.jsonl", "seed_contexts.jsonl")
        for line in (DATA / name).read_text().splitlines()
    )
    return sorted({w for w in words(text) if len(w) > 3 and not w.isdigit()})


PREFIXES = ["please", "can you", "could you", "i need you to", "help me"]
SUFFIXES = ["in detail", "briefly", "for a beginner", "step by step", "in simple terms", "with examples"]


def paraphrase(tokens: list[str], rng: random.Random, vocab: list[str]) -> list[str]:
    """1-4 edits of the kinds a rewording makes: a word replaced, added, removed or moved, another
    verb, a polite opening, a qualifier at the end."""
    tokens = list(tokens)
    for _ in range(rng.randint(1, 4)):
        edit = rng.choice("replace add remove swap verb opening qualifier".split())
        if edit == "replace":
            tokens[rng.randrange(len(tokens))] = rng.choice(vocab)
        elif edit == "add":
            tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(vocab + FUNCTION))
        elif edit == "remove" and len(tokens) > 3:
            del tokens[rng.randrange(len(tokens))]
        elif edit == "swap" and len(tokens) > 2:
            i = rng.randrange(len(tokens) - 1)
            tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
        elif edit == "verb":
            tokens[0] = rng.choice(VERBS)
        elif edit == "opening":
            tokens = rng.choice(PREFIXES).split() + tokens
        elif edit == "qualifier":
            tokens += rng.choice(SUFFIXES).split()
    return tokens


def instructions(count: int, seed: int = 0, near: float = 0.15) -> list[str]:
    """`count` instructions, a share `near` of them paraphrases of earlier ones (about half of
    those reach ROUGE-L 0.7 with their original)."""
    rng, vocab, out = random.Random(seed), vocabulary(), []
    weights = list(accumulate(1 / (rank + 1) for rank in range(len(vocab))))  # Zipf, cumulative
    while len(out) < count:
        if out and rng.random() < near:
            tokens = paraphrase(rng.choice(out).split(), rng, vocab)
        else:
            length = rng.randint(5, 25)
            tokens = [rng.choice(VERBS)] + [
                rng.choice(FUNCTION) if rng.random() < 0.35 else rng.choices(vocab, cum_weights=weights)[0]
                for _ in range(length - 1)
            ]
        out.append(" ".join(tokens))
    return out


def grow_pool(candidates: list[str], threshold: float, kind: str) -> tuple[list[str], float]:
    """The bootstrap's admission loop: a candidate joins if nothing in the pool is similar."""
    start, pool = time.perf_counter(), []
    index = None if kind == "brute" else near_duplicate_index((), threshold, kind)
    for text in candidates:
        match = brute_force_find(pool, text, threshold) if index is None else index.find(text, threshold)
        if match is None:
            pool.append(text)
            if index is not None:
                index.add(text)
    return pool, time.perf_counter() - start


def dp_lcs(a: list[str], b: list[str]) -> int:
    """The dynamic programme `lcs_length` replaced, for the ratio."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def per_check(index, queries: list[str], threshold: float) -> float:
    """Seconds per `find` of each query against `index`."""
    return timed(lambda: [index.find(q, threshold) for q in queries])[1] / len(queries)


def sample_recall(rows: list[dict], kept: list[dict], sample: int, threshold: float) -> dict:
    """Judge a random sample of the MinHash pass's decisions by the exact rule: each sampled row
    is checked with the exact index against the rows the pass kept before it. A dropped row is a
    true positive (its match was confirmed exactly), a kept row with an exact match a miss."""
    chosen = set(random.Random(1).sample(range(len(rows)), sample))
    kept_ids, exact = {row["id"] for row in kept}, NearDuplicateIndex()
    found = missed = wrong = 0
    start, checks = time.perf_counter(), 0.0
    for i, row in enumerate(rows):
        text, is_kept = row["instruction"], row["id"] in kept_ids
        if i in chosen:
            match, seconds = timed(exact.find, text, threshold)
            checks += seconds
            found += bool(match) and not is_kept
            missed += bool(match) and is_kept
            wrong += not match and not is_kept
        if is_kept:
            exact.add(text)
    assert wrong == 0, "a dropped row must have an exact match among the kept rows"
    positives = found + missed
    return {
        "sampled": sample,
        "near_duplicates": positives,
        "found": found,
        "recall": found / positives if positives else 1.0,
        "exact_check_ms": 1e3 * checks / sample,
        "seconds": time.perf_counter() - start,
        "index": exact,
    }


def pair_recall(count: int, threshold: float) -> dict[str, float]:
    """Share of paraphrase pairs at ROUGE-L >= threshold that share an LSH band (the only way a
    MinHash check can miss: candidates are then bounded and confirmed exactly), by ROUGE-L bin."""
    rng, vocab, pairs = random.Random(2), vocabulary(), []
    originals = instructions(5000, seed=3, near=0)
    while len(pairs) < count:
        a = words(rng.choice(originals))
        b = paraphrase(a, rng, vocab)
        if (score := rouge_l_tokens(a, b)) >= threshold:
            pairs.append((a, b, score))
    bands, rows = lsh_parameters(threshold)
    keys = [
        minhash.band_keys(
            minhash.signatures([minhash.elements(p[i]) for p in pairs], bands * rows), bands, rows
        )
        for i in (0, 1)
    ]
    shared = (keys[0] == keys[1]).any(axis=1)
    edges = [threshold, threshold + 0.05, threshold + 0.1, 0.9, 1.01]
    out = {}
    for low, high in zip(edges, edges[1:]):
        inside = [i for i, p in enumerate(pairs) if low <= p[2] < high]
        if inside:
            out[f"[{low:.2f},{min(high, 1):.2f}{')' if high < 1 else ']'}"] = float(shared[inside].mean())
    out["all"] = float(shared.mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the dataset-level pass")
    parser.add_argument("--compare", type=int, default=10_000, help="rows deduplicated both ways")
    parser.add_argument("--sample", type=int, default=1000, help="rows of the pass judged exactly")
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--threshold", type=float, default=0.7)
    args = parser.parse_args()
    t = args.threshold
    report: dict = {"threshold": t, "rows": args.rows}

    pairs = [(words(a), words(b)) for a, b in zip(instructions(2000, 1), instructions(2000, 2))]
    _, both = timed(lambda: [lcs_length(a, b) == dp_lcs(a, b) or 1 / 0 for a, b in pairs])
    _, fast = timed(lambda: [lcs_length(a, b) for a, b in pairs])
    print(
        f"LCS, {len(pairs)} pairs: bit-parallel {fast * 1e3:.0f} ms, DP {(both - fast) * 1e3:.0f} ms "
        f"(x{(both - fast) / fast:.1f})"
    )

    small = instructions(args.small)
    grown = {kind: grow_pool(small, t, kind) for kind in ("exact", "minhash", "brute")}
    assert grown["exact"][0] == grown["brute"][0], "the exact index must keep what brute force keeps"
    print(
        f"Pool from {args.small} candidates ({len(grown['brute'][0])} kept by brute force): exact index "
        f"{grown['exact'][1]:.2f} s (identical), MinHash {grown['minhash'][1]:.2f} s "
        f"({'identical' if grown['minhash'][0] == grown['brute'][0] else 'DIFFERENT'}), "
        f"brute force {grown['brute'][1]:.2f} s"
    )

    rows = [{"id": str(i), "instruction": text} for i, text in enumerate(instructions(args.rows))]
    head = rows[: args.compare]
    (exact_kept, _), exact_seconds = timed(drop_near_duplicates, head, threshold=t, method="exact")
    (lsh_kept, _), lsh_seconds = timed(drop_near_duplicates, head, threshold=t, method="minhash")
    same = [r["id"] for r in exact_kept] == [r["id"] for r in lsh_kept]
    print(
        f"Dedup of the first {len(head)} rows: exact {exact_seconds:.1f} s, MinHash {lsh_seconds:.1f} s, "
        f"{len(head) - len(exact_kept)} vs {len(head) - len(lsh_kept)} dropped "
        f"({'identical' if same else 'DIFFERENT'} rows kept)"
    )
    report["compare"] = {
        "rows": len(head),
        "exact_s": exact_seconds,
        "minhash_s": lsh_seconds,
        "exact_dropped": len(head) - len(exact_kept),
        "minhash_dropped": len(head) - len(lsh_kept),
        "identical": same,
    }

    (kept, drops), seconds = timed(drop_near_duplicates, rows, threshold=t, method="minhash")
    print(
        f"Dedup of {len(rows)} rows (the instruct flow's pass, MinHash): {seconds:.1f} s, "
        f"{len(drops)} near-duplicates dropped, {len(kept)} kept"
    )
    report.update(minhash_s=seconds, dropped=len(drops), kept=len(kept))

    sampled = sample_recall(rows, kept, args.sample, t)
    exact = sampled.pop("index")
    print(
        f"Recall on {sampled['sampled']} sampled rows, judged exactly: {sampled['found']} of "
        f"{sampled['near_duplicates']} near-duplicates dropped ({sampled['recall']:.2%}); no row dropped "
        f"without an exact match ({sampled['seconds']:.0f} s)"
    )
    estimate = len(rows) * sampled["exact_check_ms"] / 1e3
    print(
        f"The same pass with the exact index: about {estimate / 60:.0f} min (its checks on the sample "
        f"averaged {sampled['exact_check_ms']:.1f} ms), x{estimate / seconds:.0f} the MinHash pass"
    )
    report["sample"] = sampled
    report["exact_estimate_s"] = estimate

    queries = instructions(100, seed=7)
    costs = {}
    for size in (10_000, len(kept)):
        texts = [row["instruction"] for row in kept[:size]]
        exact_index = exact if size == len(kept) else NearDuplicateIndex(texts)
        exact_ms = 1e3 * per_check(exact_index, queries, t)
        minhash_ms = 1e3 * per_check(MinHashIndex(texts, t), queries, t)
        costs[len(texts)] = {"exact_ms": exact_ms, "minhash_ms": minhash_ms}
        print(
            f"One check against {len(texts)} kept instructions: exact index {exact_ms:.2f} ms, "
            f"MinHash {minhash_ms:.2f} ms (x{exact_ms / minhash_ms:.0f})"
        )
    report["per_check"] = costs

    recall = pair_recall(args.pairs, t)
    print(
        f"Paraphrase pairs at ROUGE-L >= {t} sharing a band ({args.pairs} pairs): "
        + ", ".join(f"{k} {v:.4f}" for k, v in recall.items())
    )
    report["pair_recall"] = recall
    print(json.dumps(report))


if __name__ == "__main__":
    main()
