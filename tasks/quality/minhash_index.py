"""A near-duplicate index for large pools: MinHash LSH candidates, each confirmed by the exact
ROUGE-L, so a reported match is always a true one and only recall is probabilistic.

Why unigram shingles (each word numbered by its occurrence) and 64 bands of 4 rows at t = 0.7:
ROUGE-L F1 is 2*LCS/(|x|+|y|) and an LCS is at most the shared words, so ROUGE-L >= t implies
shared >= t(|x|+|y|)/2, i.e. a word-multiset Jaccard of at least t/(2-t) (0.538 at 0.7). Word
n-grams have no such floor (an insertion between every pair of words keeps ROUGE-L high and shares
no bigram). So every pair at ROUGE-L >= t is a candidate with probability at least
1 - (1 - 0.538^4)^64 = 0.996, and most near-duplicates sit well above the floor
(`bench/near_duplicates.py` measures the recall). `lsh_parameters` picks the rows per band for
other thresholds the same way. Candidates then meet a per-text word-count sketch that bounds their
overlap from above (so it never drops a true match) and only survivors get the LCS.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from tasks.quality import minhash
from tasks.quality.filters import check_threshold, rouge_l_tokens, words

_EPS = 1e-9  # slack so float rounding never prunes a true match
BANDS, MAX_ROWS, TARGET = 64, 8, 0.99
SKETCH_BUCKETS = 64


class _Features(NamedTuple):
    tokens: list[str]
    keys: np.ndarray  # LSH band keys
    sketch: np.ndarray  # element counts per hash bucket


def lsh_parameters(threshold: float) -> tuple[int, int]:
    """(bands, rows per band): the most rows per band (the fewer, the more unrelated candidates)
    that still make every pair at ROUGE-L >= `threshold` a candidate with probability >= TARGET."""
    floor = threshold / (2 - threshold)
    rows = 1
    while rows < MAX_ROWS and minhash.candidate_probability(floor, BANDS, rows + 1) >= TARGET:
        rows += 1
    return BANDS, rows


class MinHashIndex:
    """`NearDuplicateIndex.find`'s answers for large pools, at a cost that grows far more slowly
    with them: MinHash LSH proposes the stored texts that share a band with the query, a
    word-count sketch drops those that cannot reach the threshold, and the exact ROUGE-L decides,
    so every match it reports is exact; it misses one only when the pair shares no band."""

    def __init__(self, texts: Iterable[str] = (), threshold: float = 0.7) -> None:
        check_threshold(threshold)
        self.threshold = threshold
        self.bands, self.rows = lsh_parameters(threshold)
        self.texts: list[str] = []
        self._tokens: list[list[str]] = []
        self._lengths = np.zeros(1024, dtype=np.int64)
        self._sketches = np.zeros((1024, SKETCH_BUCKETS), dtype=np.uint8)
        self._table = minhash.BandTable(self.bands)
        self._ready: dict[str, _Features] = {}
        self._last: tuple[str, _Features] | None = None
        texts = list(texts)
        self.prepare(texts)
        for text in texts:
            self.add(text)

    def __len__(self) -> int:
        return len(self.texts)

    def prepare(self, texts: list[str]) -> None:
        """Hash `texts` now, all at once (much faster than one at a time), for later calls."""
        tokens = [words(text) for text in texts]
        shingles = [minhash.elements(t) for t in tokens]
        keys = minhash.band_keys(minhash.signatures(shingles, self.bands * self.rows), self.bands, self.rows)
        sketches = minhash.sketches(shingles, SKETCH_BUCKETS)
        for i, text in enumerate(texts):
            self._ready[text] = _Features(tokens[i], keys[i], sketches[i])

    def _features(self, text: str) -> _Features:
        # subtle: `find` then `add` of one text is the common sequence: hash it once.
        if self._last is None or self._last[0] != text:
            if text not in self._ready:
                self.prepare([text])
            self._last = (text, self._ready.pop(text))
        return self._last[1]

    def add(self, text: str) -> int:
        """Store `text`; returns its position."""
        position, features = len(self.texts), self._features(text)
        if position == len(self._lengths):  # grow the per-text arrays by doubling
            self._lengths = np.concatenate([self._lengths, np.zeros_like(self._lengths)])
            self._sketches = np.concatenate([self._sketches, np.zeros_like(self._sketches)])
        self.texts.append(text)
        self._tokens.append(features.tokens)
        self._lengths[position] = len(features.tokens)
        self._sketches[position] = features.sketch
        if features.tokens:  # an empty text matches nothing
            self._table.add(features.keys, position)
        return position

    def find(self, text: str, threshold: float | None = None) -> tuple[str, float] | None:
        """As `NearDuplicateIndex.find`; `threshold` defaults to the one the bands were chosen for
        (a lower one finds its matches with a lower probability)."""
        threshold = self.threshold if threshold is None else threshold
        check_threshold(threshold)
        features = self._features(text)
        n = len(features.tokens)
        if n == 0:
            return None
        positions = self._table.lookup(features.keys)
        shared = np.minimum(self._sketches[positions], features.sketch).sum(axis=1, dtype=np.int64)
        bounds = 2 * shared / (n + self._lengths[positions])
        possible = (bounds >= threshold - _EPS).nonzero()[0]
        best: tuple[int, float] | None = None
        for i in sorted(possible.tolist(), key=lambda i: (-bounds[i], positions[i])):
            position = int(positions[i])
            if best and bounds[i] < best[1] - _EPS:
                break  # sorted by bound: nothing left can beat the best
            score = rouge_l_tokens(features.tokens, self._tokens[position])
            if score >= threshold and (not best or (score, -position) > (best[1], -best[0])):
                best = (position, score)
        return (self.texts[best[0]], best[1]) if best else None
