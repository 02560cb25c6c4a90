"""Benchmark: Self-Instruct's ROUGE-L novelty filter on a growing pool, with the prefiltered
`NearDuplicateIndex` against brute force (every pool entry compared), in one run.

    PYTHONPATH=. python bench/near_duplicates.py [--pool 10000] [--small 1000]

Instructions are synthetic but shaped like real ones: a leading verb, function words ("the",
"a", "of") in a third of the positions (the worst case for an inverted index), Zipf-distributed
content words from the shipped seed data, and 15% near-copies of earlier instructions.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from tasks.filters import lcs_length, words
from tasks.near_duplicates import NearDuplicateIndex, brute_force_find

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


def instructions(count: int, seed: int = 0) -> list[str]:
    rng, vocab, out = random.Random(seed), vocabulary(), []
    weights = [1 / (rank + 1) for rank in range(len(vocab))]  # Zipf
    while len(out) < count:
        if out and rng.random() < 0.15:  # a near-copy: one word changed
            tokens = rng.choice(out).split()
            tokens[rng.randrange(len(tokens))] = rng.choice(vocab)
        else:
            length = rng.randint(5, 25)
            tokens = [rng.choice(VERBS)] + [
                rng.choice(FUNCTION) if rng.random() < 0.35 else rng.choices(vocab, weights)[0]
                for _ in range(length - 1)
            ]
        out.append(" ".join(tokens))
    return out


def grow_pool(candidates: list[str], threshold: float, brute: bool) -> tuple[list[str], float]:
    """The bootstrap's admission loop: a candidate joins if nothing in the pool is similar."""
    start, pool, index = time.perf_counter(), [], NearDuplicateIndex()
    for text in candidates:
        match = brute_force_find(pool, text, threshold) if brute else index.find(text, threshold)
        if match is None:
            pool.append(text)
            if not brute:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--threshold", type=float, default=0.7)
    args = parser.parse_args()

    pairs = [(words(a), words(b)) for a, b in zip(instructions(2000, 1), instructions(2000, 2))]
    start = time.perf_counter()
    assert [lcs_length(a, b) for a, b in pairs] == [dp_lcs(a, b) for a, b in pairs]
    both = time.perf_counter() - start
    start = time.perf_counter()
    for a, b in pairs:
        lcs_length(a, b)
    fast = time.perf_counter() - start
    print(
        f"LCS, {len(pairs)} pairs: bit-parallel {fast * 1e3:.0f} ms, DP {(both - fast) * 1e3:.0f} ms "
        f"(x{(both - fast) / fast:.1f})"
    )

    small = instructions(args.small)
    kept_fast, fast = grow_pool(small, args.threshold, brute=False)
    kept_brute, brute = grow_pool(small, args.threshold, brute=True)
    assert kept_fast == kept_brute, "the index must keep exactly what brute force keeps"
    print(
        f"Pool from {args.small} candidates ({len(kept_fast)} kept, identical): index {fast:.2f} s, "
        f"brute force {brute:.2f} s (x{brute / fast:.0f})"
    )

    candidates = instructions(args.pool * 2)
    start, index, admitted = time.perf_counter(), NearDuplicateIndex(), 0
    for text in candidates:
        if index.find(text, args.threshold) is None:
            index.add(text)
            if len(index) == args.pool:
                break
        admitted += 1
    grow = time.perf_counter() - start
    print(
        f"Pool grown to {len(index)} instructions ({admitted} candidates checked): {grow:.1f} s, "
        f"{grow / admitted * 1e3:.2f} ms per candidate"
    )

    queries = instructions(200, seed=7)
    start = time.perf_counter()
    for query in queries:
        index.find(query, args.threshold)
    indexed = (time.perf_counter() - start) / len(queries)
    start = time.perf_counter()
    for query in queries[:20]:
        brute_force_find(index.texts, query, args.threshold)
    brute = (time.perf_counter() - start) / 20
    print(
        f"One check against the {len(index)}-instruction pool: index {indexed * 1e3:.2f} ms, "
        f"brute force {brute * 1e3:.0f} ms (x{brute / indexed:.0f})"
    )
    start = time.perf_counter()
    NearDuplicateIndex(index.texts)
    print(
        f"Indexing {len(index)} instructions (what each bootstrap round does): "
        f"{time.perf_counter() - start:.2f} s"
    )


if __name__ == "__main__":
    main()
