"""Near-duplicate detection by ROUGE-L, fast on large pools: Self-Instruct's novelty filter (Wang et
al., 2022, arXiv:2212.10560, section 2.3: a new instruction joins the pool only if its ROUGE-L with
every instruction already there is below 0.7) and dataset-level deduplication share this module.

Comparing a text with every pool entry is N full ROUGE-L computations per text, N^2 to build a
pool. Two indexes answer "which stored text is most similar to this one, if any reaches t?":

- `NearDuplicateIndex` gives exactly the brute-force answer, faster, with exact filters: ROUGE-L
  F1 is 2*LCS/(|x|+|y|) and an LCS is at most the two texts' shared words, counted with
  multiplicity. So a match needs (1) a length within [t/(2-t), (2-t)/t] times the query's, (2) at
  least o = t*|x|/(2-t) shared words, hence (3) a shared word among ANY |x|-o+1 of the query's
  words: the index probes its rarest ones (prefix filtering, as in the AllPairs/PPJoin
  set-similarity joins) among texts of a possible length, bounds each candidate by its shared-word
  count, and computes the exact LCS only for the few that can still pass. Its cost still grows
  with the pool, since function words are in most texts.
- `MinHashIndex` (`tasks/quality/minhash_index.py`) proposes candidates by MinHash LSH and confirms each
  with the exact ROUGE-L: nothing below the threshold is ever reported, and a pair at or above it
  is missed with probability under 0.4% (the LSH bound derived in tasks/quality/minhash_index.py);
  a check's cost grows far more slowly with the pool.

The choice (`near_duplicate_index`, method "auto"): exact up to EXACT_UP_TO texts, where a whole
pass is cheap either way and exactness is free; MinHash above, where the exact pass grows
quadratically. Pass method "exact" to always get the brute-force answer. `bench/near_duplicates.py`
measures both; docs/near_duplicates.md holds its figures (times per check and per pass, recall).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from tasks.quality.filters import check_threshold, rouge_l_tokens, words
from tasks.quality.minhash_index import MinHashIndex
from tasks.rows import Row, drop

_EPS = 1e-9  # slack so float rounding never prunes a pair that brute force would keep
EXACT_UP_TO = 2_000  # "auto" indexes pools up to this size exactly (docs/near_duplicates.md)
Method = Literal["auto", "exact", "minhash"]


def _elements(tokens: list[str]) -> list[tuple[str, int]]:
    """Each token with its occurrence number, so set overlap equals multiset overlap."""
    seen: Counter[str] = Counter()
    out = []
    for token in tokens:
        out.append((token, seen[token]))
        seen[token] += 1
    return out


class NearDuplicateIndex:
    """Texts indexed for "which stored text is most similar to this one, if any reaches t?"."""

    def __init__(self, texts: Iterable[str] = ()) -> None:
        self.texts: list[str] = []
        self._tokens: list[list[str]] = []
        self._counts: list[Counter[str]] = []
        # word occurrence -> text length -> positions; and each occurrence's number of texts
        self._postings: dict[tuple[str, int], dict[int, list[int]]] = {}
        self._sizes: dict[tuple[str, int], int] = {}
        for text in texts:
            self.add(text)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str) -> int:
        """Store `text`; returns its position."""
        position, tokens = len(self.texts), words(text)
        counts = Counter(tokens)
        self.texts.append(text)
        self._tokens.append(tokens)
        self._counts.append(counts)
        postings, sizes, length = self._postings, self._sizes, len(tokens)
        for token, count in counts.items():
            for occurrence in range(count):
                element = (token, occurrence)
                by_length = postings.get(element)
                if by_length is None:
                    postings[element] = by_length = {}
                by_length.setdefault(length, []).append(position)
                sizes[element] = sizes.get(element, 0) + 1
        return position

    def find(self, text: str, threshold: float) -> tuple[str, float] | None:
        """The stored text with the highest ROUGE-L against `text` (the earliest on a tie) and its
        score, when that score is >= `threshold`; None otherwise."""
        check_threshold(threshold)
        tokens = words(text)
        best: tuple[int, float] | None = None
        for bound, position in self._candidates(tokens, threshold):
            if best and bound < best[1] - _EPS:
                break  # sorted by bound: nothing left can beat the best
            score = rouge_l_tokens(tokens, self._tokens[position])
            if score >= threshold and (not best or (score, -position) > (best[1], -best[0])):
                best = (position, score)
        return (self.texts[best[0]], best[1]) if best else None

    def _candidates(self, tokens: list[str], threshold: float) -> list[tuple[float, int]]:
        """(upper bound on ROUGE-L, position) of every stored text that could reach `threshold`,
        highest bound first."""
        n, t = len(tokens), threshold
        if n == 0:
            return []
        needed = max(1, math.ceil(t * n / (2 - t) - _EPS))
        probe = sorted(_elements(tokens), key=lambda e: self._sizes.get(e, 0))[: n - needed + 1]
        lowest, highest = math.ceil(t * n / (2 - t) - _EPS), math.floor((2 - t) * n / t + _EPS)
        hits: Counter[int] = Counter()
        for element in probe:
            for m, positions in self._postings.get(element, {}).items():
                if lowest <= m <= highest:  # length filter, a whole bucket at a time
                    hits.update(positions)
        counts, unprobed, out = Counter(tokens), needed - 1, []
        for position, hit in hits.items():
            m = len(self._tokens[position])
            if hit + unprobed < t * (n + m) / 2 - _EPS:  # the unprobed words cannot make up the rest
                continue
            bound = 2 * sum((counts & self._counts[position]).values()) / (n + m)
            if bound >= t - _EPS:
                out.append((bound, position))
        return sorted(out, key=lambda c: (-c[0], c[1]))


Index = NearDuplicateIndex | MinHashIndex


def brute_force_find(texts: list[str], text: str, threshold: float) -> tuple[str, float] | None:
    """`NearDuplicateIndex.find` by comparing with every text: the reference for tests and bench."""
    check_threshold(threshold)
    tokens, best = words(text), None
    for candidate in texts:
        score = rouge_l_tokens(tokens, words(candidate))
        if score >= threshold and (best is None or score > best[1]):
            best = (candidate, score)
    return best


def near_duplicate_index(
    texts: Sequence[str] = (), threshold: float = 0.7, method: Method = "auto", size: int | None = None
) -> Index:
    """An index holding `texts`, for a pool that grows to about `size` texts (default: as many):
    `exact` (`NearDuplicateIndex`), `minhash` (`MinHashIndex`, tuned for `threshold`), or `auto`,
    exact up to EXACT_UP_TO texts and MinHash beyond."""
    size = len(texts) if size is None else size
    if method == "auto":
        method = "exact" if size <= EXACT_UP_TO else "minhash"
    if method == "exact":
        return NearDuplicateIndex(texts)
    if method == "minhash":
        return MinHashIndex(texts, threshold)
    raise ValueError(f"A near-duplicate method must be 'auto', 'exact' or 'minhash', got {method!r}.")


def drop_near_duplicates(
    rows: list[Row],
    column: str = "instruction",
    threshold: float = 0.7,
    stage: str = "deduplicate",
    method: Method = "auto",
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Row], list[dict[str, Any]]]:
    """Keep each row whose `column` has ROUGE-L < `threshold` with every row kept before it; the
    others become `near_duplicate` drop records naming the kept text they repeat and the score.
    `method` picks the index (see `near_duplicate_index`); `progress(n)` hears of rows done."""
    check_threshold(threshold)
    index = near_duplicate_index((), threshold, method, size=len(rows))
    if isinstance(index, MinHashIndex):
        index.prepare([row[column] for row in rows])  # hashing all at once is much faster
    kept, drops, reported = [], [], 0
    for i, row in enumerate(rows, start=1):
        match = index.find(row[column], threshold)
        if match:
            record = drop(stage, "near_duplicate", row, row[column])
            drops.append({**record, "similar_to": match[0], "score": round(match[1], 4)})
        else:
            index.add(row[column])
            kept.append(row)
        if progress and (i % 1000 == 0 or i == len(rows)):
            progress(i - reported)
            reported = i
    return kept, drops
