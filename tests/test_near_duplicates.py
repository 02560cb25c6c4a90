"""The exact near-duplicate index gives the brute-force ROUGE-L answer; the MinHash one finds the same
near-duplicates on realistic sets, never reports a pair below the threshold and is the same in every
process; both drop near-copies with records."""

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.quality import filters, minhash
from tasks.quality.minhash_index import MinHashIndex, lsh_parameters
from tasks.quality.near_duplicates import (
    EXACT_UP_TO,
    NearDuplicateIndex,
    brute_force_find,
    drop_near_duplicates,
    near_duplicate_index,
)

VOCAB = "the a of write explain list cat tide river poem short why how".split()


def random_text(rng: random.Random) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(0, 10)))


@pytest.mark.parametrize("seed", range(8))
def test_index_agrees_with_brute_force(seed):
    rng = random.Random(seed)
    pool = [random_text(rng) for _ in range(60)]
    index = NearDuplicateIndex(pool)
    for _ in range(60):
        query = random_text(rng)
        threshold = rng.choice([0.2, 0.5, 0.7, 0.85, 1.0])
        assert index.find(query, threshold) == brute_force_find(pool, query, threshold)


def test_find_returns_the_best_match_and_its_score():
    index = NearDuplicateIndex(["Write a poem about the sea.", "Write a short poem about the sea at night."])
    match, score = index.find("Write a short poem about the sea.", 0.7)
    assert match == "Write a poem about the sea."
    assert score == pytest.approx(filters.rouge_l(match, "Write a short poem about the sea."))
    assert index.find("List three uses of copper.", 0.7) is None
    assert index.find("", 0.7) is None


def test_added_texts_are_found_and_counted():
    index = NearDuplicateIndex()
    assert index.find("Explain why tides happen twice a day.", 0.7) is None
    index.add("Explain why tides happen twice a day.")
    assert len(index) == 1
    assert index.find("explain why tides happen twice a day", 0.7)[1] == 1.0


@pytest.mark.parametrize("threshold", [0, -0.1, 1.5])
def test_a_threshold_outside_0_1_is_an_error(threshold):
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        NearDuplicateIndex(["a b c"]).find("a b c", threshold)


def test_drop_near_duplicates_keeps_the_first_and_records_the_rest():
    rows = [
        {"id": "1", "instruction": "Write a poem about the sea."},
        {"id": "2", "instruction": "List three uses of copper."},
        {"id": "3", "instruction": "Write a poem about the sea!"},
        {"id": "4", "instruction": "Write a short poem about the sea."},
    ]
    kept, drops = drop_near_duplicates(rows, "instruction", threshold=0.7)
    assert [r["id"] for r in kept] == ["1", "2"]
    assert [(d["row_id"], d["reason"], d["stage"]) for d in drops] == [
        ("3", "near_duplicate", "deduplicate"),
        ("4", "near_duplicate", "deduplicate"),
    ]
    assert drops[0]["similar_to"] == "Write a poem about the sea." and drops[0]["score"] == 1.0


def test_fast_lcs_matches_the_dynamic_programme():
    def reference(a, b):
        previous = [0] * (len(b) + 1)
        for x in a:
            current = [0]
            for j, y in enumerate(b):
                current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
            previous = current
        return previous[-1]

    rng = random.Random(0)
    for _ in range(500):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 70))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 70))]
        assert filters.lcs_length(a, b) == reference(a, b)


# MinHash LSH: candidates by banding, confirmed by the exact ROUGE-L.

TOPICS = "tide river poem copper budget recipe garden planet history network protein engine".split()
FILLER = "the a of to for and in with about how".split()
VERBS = "write explain list describe summarize compare suggest plan".split()


def instruction_set(count: int, seed: int) -> list[str]:
    """Instructions with function words and topical words, a fifth of them paraphrase-like edits
    (a word replaced, added, removed or moved, a polite opening) of earlier ones."""
    rng, out = random.Random(seed), []
    while len(out) < count:
        if out and rng.random() < 0.2:
            tokens = rng.choice(out).split()
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(len(tokens))
                edit = rng.choice(["replace", "add", "remove", "swap", "opening"])
                if edit == "replace":
                    tokens[i] = rng.choice(TOPICS + FILLER)
                elif edit == "add":
                    tokens.insert(i, rng.choice(TOPICS))
                elif edit == "remove" and len(tokens) > 4:
                    del tokens[i]
                elif edit == "swap" and i + 1 < len(tokens):
                    tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
                elif edit == "opening":
                    tokens = ["please", *tokens]
        else:
            tokens = [rng.choice(VERBS)] + [
                rng.choice(FILLER if rng.random() < 0.35 else TOPICS + [f"w{rng.randrange(400)}"])
                for _ in range(rng.randint(4, 20))
            ]
        out.append(" ".join(tokens))
    return out


def test_the_bands_make_every_pair_at_the_threshold_a_candidate_with_high_probability():
    bands, rows = lsh_parameters(0.7)
    assert (bands, rows) == (64, 4)
    assert minhash.candidate_probability(0.7 / (2 - 0.7), bands, rows) > 0.995  # the Jaccard floor


@pytest.mark.parametrize("seed", range(3))
def test_minhash_drops_exactly_what_the_exact_index_drops(seed):
    rows = [{"id": str(i), "instruction": text} for i, text in enumerate(instruction_set(1500, seed))]
    exact = drop_near_duplicates(rows, method="exact")
    lsh = drop_near_duplicates(rows, method="minhash")
    assert len(exact[1]) > 150  # the set has near-duplicates to find
    assert lsh == exact


def test_minhash_reports_only_pairs_at_or_above_the_threshold():
    rng = random.Random(5)
    pool = [random_text(rng) for _ in range(300)]
    index = MinHashIndex(pool, threshold=0.7)
    found = 0
    for _ in range(300):
        query = random_text(rng)
        match = index.find(query, 0.7)
        expected = brute_force_find(pool, query, 0.7)
        assert (match is None) == (expected is None)
        if match:
            found += 1
            assert match[1] == expected[1] == filters.rouge_l(query, match[0]) >= 0.7
    assert found > 50


def test_long_texts_with_saturated_sketches_are_still_found():
    long = " ".join(f"w{i % 500}" for i in range(20_000))  # over 255 words in every sketch bucket
    assert (minhash.sketches([minhash.elements(long.split())], 64) == 255).all()
    index = MinHashIndex([long, "a short unrelated text about copper"])
    match = index.find(long + " extra", 0.7)
    assert match and match[0] == long and match[1] > 0.99


def test_band_table_lookups_survive_merges():
    rng = np.random.default_rng(0)
    # many shared keys; as with real band keys, a key belongs to one band
    keys = (rng.integers(0, 50, size=(3000, 4)) * 4 + np.arange(4)).astype(np.uint64)
    table, reference = minhash.BandTable(bands=4, buffer=16), {}
    for position, row in enumerate(keys):
        table.add(row, position)
        for key in row.tolist():
            reference.setdefault(key, set()).add(position)
        if position % 97 == 0:
            query = keys[rng.integers(0, position + 1)]
            expected = sorted(set().union(*(reference.get(k, set()) for k in query.tolist())))
            assert table.lookup(query).tolist() == expected


DIGEST = """
import hashlib, json
from tasks.quality.minhash import band_keys, elements, signatures
from tasks.quality.near_duplicates import drop_near_duplicates
from tests.test_near_duplicates import instruction_set
texts = instruction_set(400, 1)
keys = band_keys(signatures([elements(t.split()) for t in texts], 256), 64, 4)
kept, _ = drop_near_duplicates([{"id": t, "instruction": t} for t in texts], method="minhash")
print(hashlib.sha256(keys.tobytes() + json.dumps([r["id"] for r in kept]).encode()).hexdigest())
"""


def test_minhash_is_the_same_in_every_process():
    """No Python hash(): processes with different hash seeds give the same keys and result."""
    root = Path(__file__).resolve().parents[1]
    digests = {
        subprocess.run(
            [sys.executable, "-c", DIGEST],
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(digests) == 1


def test_auto_is_exact_for_small_pools_and_minhash_for_large_ones():
    assert isinstance(near_duplicate_index(["a b c"]), NearDuplicateIndex)
    assert isinstance(near_duplicate_index(size=EXACT_UP_TO + 1), MinHashIndex)
    assert isinstance(near_duplicate_index(["a b c"], method="minhash"), MinHashIndex)
    with pytest.raises(ValueError, match="'auto', 'exact' or 'minhash'"):
        near_duplicate_index(method="fuzzy")


def test_the_pass_reports_its_progress_in_thousands_of_rows():
    rows = [{"id": str(i), "instruction": text} for i, text in enumerate(instruction_set(2500, 4))]
    steps = []
    drop_near_duplicates(rows, progress=steps.append)
    assert steps == [1000, 1000, 500]
