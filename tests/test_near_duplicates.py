"""The near-duplicate index gives the brute-force ROUGE-L answer, and drops near-copies with records."""

import random

import pytest

from tasks import filters
from tasks.near_duplicates import NearDuplicateIndex, brute_force_find, drop_near_duplicates

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
