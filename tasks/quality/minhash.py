"""MinHash signatures and LSH banding: which stored texts share enough words with a query to be
worth an exact comparison, without scanning them all (Broder, 1997, "On the resemblance and
containment of documents"; the banding of Leskovec, Rajaraman & Ullman, *Mining of Massive
Datasets*, ch. 3.4).

A text is the set of its words numbered by occurrence ("the#0", "the#1", ...), so set Jaccard is
multiset Jaccard. Each of `rows * bands` hash functions keeps its minimum over that set; two texts
agree on one minimum with probability equal to their Jaccard similarity J, and share a band (all
`rows` minima of it) with probability J^rows, so they become candidates with probability
1 - (1 - J^rows)^bands. Everything is hashed with blake2b and fixed seeds, never Python's `hash()`,
so signatures, and hence results, are the same in every process and on every run.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from functools import lru_cache
from itertools import chain
from typing import NamedTuple

import numpy as np

_C1, _C2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_CHUNK = 1 << 11  # elements hashed at once: (elements x hashes) temporaries stay in cache


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer, elementwise on uint64 (the multiplications wrap around by design)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _C1
    x = x ^ (x >> np.uint64(27))
    x = x * _C2
    return x ^ (x >> np.uint64(31))


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


@lru_cache(maxsize=1 << 20)
def _element(token: str, occurrence: int) -> int:
    return _digest(f"{occurrence}\x1f{token}")


def elements(tokens: list[str]) -> list[int]:
    """A stable 64-bit hash of each token numbered by its occurrence: the text's shingle set."""
    seen: Counter[str] = Counter()
    out = []
    for token in tokens:
        out.append(_element(token, seen[token]))
        seen[token] += 1
    return out


@lru_cache(maxsize=8)
def _seeds(count: int) -> np.ndarray:
    return np.array([_digest(f"minhash-{i}") for i in range(count)], dtype=np.uint64)


def signatures(shingles: list[list[int]], num_hashes: int) -> np.ndarray:
    """(texts, num_hashes) uint64 MinHash signatures of `elements` lists; an empty text gets
    all-ones (it matches nothing, and callers skip it)."""
    seeds, out = _seeds(num_hashes), np.full((len(shingles), num_hashes), ~np.uint64(0))
    start = 0
    while start < len(shingles):  # texts in chunks of about _CHUNK elements
        stop, size = start, 0
        while stop < len(shingles) and (size == 0 or size + len(shingles[stop]) <= _CHUNK):
            size, stop = size + len(shingles[stop]), stop + 1
        chunk = [i for i in range(start, stop) if shingles[i]]
        if chunk:
            flat = np.fromiter((x for i in chunk for x in shingles[i]), dtype=np.uint64, count=size)
            starts = np.cumsum([0] + [len(shingles[i]) for i in chunk[:-1]])
            out[chunk] = np.minimum.reduceat(_mix(flat[:, None] ^ seeds[None, :]), starts, axis=0)
        start = stop
    return out


def sketches(shingles: list[list[int]], buckets: int) -> np.ndarray:
    """(texts, buckets) uint8: how many of each text's elements fall in each hash bucket. Two
    texts share at most sum(minimum(sketch_a, sketch_b)) elements (a collision only adds), so the
    sketch bounds their word overlap from above, for many stored texts at once. A text with more
    than 255 elements in a bucket gets 255 in every bucket, which only loosens its bounds."""
    lengths = [len(hashes) for hashes in shingles]
    flat = np.fromiter(chain.from_iterable(shingles), dtype=np.uint64, count=sum(lengths))
    cells = np.repeat(np.arange(len(shingles)) * buckets, lengths) + (flat % np.uint64(buckets)).astype(int)
    counts = np.bincount(cells, minlength=len(shingles) * buckets).reshape(len(shingles), buckets)
    counts[(counts > 255).any(axis=1)] = 255
    return counts.astype(np.uint8)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(texts, bands) uint64: one key per band, hashing its `rows` minima and the band's number
    (so keys of different bands never meet in one table)."""
    grouped = signatures[:, : bands * rows].reshape(len(signatures), bands, rows)
    keys = np.broadcast_to(_mix(np.arange(bands, dtype=np.uint64) + np.uint64(1)), grouped.shape[:2])
    for j in range(rows):
        keys = _mix(keys ^ grouped[:, :, j])
    return keys


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """Chance that two texts with this Jaccard similarity share at least one band."""
    return 1 - (1 - jaccard**rows) ** bands


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """The concatenation of range(start, stop) for each pair, without a Python loop."""
    counts = stops - starts
    return np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())


class _Run(NamedTuple):
    """Sorted band keys: positions[offsets[i]:offsets[i + 1]] hold keys[i]. Keys are uniform
    64-bit hashes, so a directory on their top bits (about 4 keys a slot) finds a key with a few
    array reads, where a binary search misses the cache at every level."""

    keys: np.ndarray  # sorted, distinct
    offsets: np.ndarray
    positions: np.ndarray
    directory: np.ndarray  # keys[directory[p]:directory[p + 1]] start with top bits p
    shift: np.uint64

    @classmethod
    def build(cls, keys: np.ndarray, positions: np.ndarray) -> _Run:
        order = np.argsort(keys, kind="stable")
        keys, positions = keys[order], positions[order]
        starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
        distinct = keys[starts]
        bits = max(1, int(np.log2(len(distinct))) - 2)
        shift = np.uint64(64 - bits)
        directory = np.searchsorted(distinct, np.arange(1 << bits, dtype=np.uint64) << shift)
        return cls(
            distinct, np.append(starts, len(keys)), positions, np.append(directory, len(distinct)), shift
        )

    def expanded(self) -> tuple[np.ndarray, np.ndarray]:
        return np.repeat(self.keys, np.diff(self.offsets)), self.positions

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        slots = (keys >> self.shift).astype(np.intp)
        low, high = self.directory[slots], self.directory[slots + 1]
        near = _ranges(low, high)
        found = near[self.keys[near] == np.repeat(keys, high - low)]
        return self.positions[_ranges(self.offsets[found], self.offsets[found + 1])]


class BandTable:
    """Band keys -> positions of the texts that have them, append-only. Keys live in sorted numpy
    runs merged as they grow (a log-structured merge): an add costs O(log n) amortized, and a key
    and its position take a few array bytes, where a dict entry per key and text would take
    several times more (64 entries per text)."""

    def __init__(self, bands: int, buffer: int = 256) -> None:
        self._buffer = np.empty((buffer, bands), dtype=np.uint64)  # the newest texts' keys, unsorted
        self._buffered = np.empty(buffer, dtype=np.int32)  # and their positions
        self._count = 0
        self._runs: list[_Run] = []

    def add(self, keys: np.ndarray, position: int) -> None:
        """Store the band keys of the text at `position`."""
        self._buffer[self._count], self._buffered[self._count] = keys, position
        self._count += 1
        if self._count == len(self._buffer):
            self._flush()

    def _flush(self) -> None:
        keys = self._buffer.ravel()
        self._runs.append(_Run.build(keys, np.repeat(self._buffered, self._buffer.shape[1])))
        self._count = 0
        # Merge while the newer run is at least an eighth of the older: about log8(n) runs to search
        # per lookup (measured faster than log2(n) runs with half the merging); a stable sort of
        # two sorted runs is one linear merge.
        while len(self._runs) > 1 and 8 * len(self._runs[-1].positions) >= len(self._runs[-2].positions):
            (newer_keys, newer), (older_keys, older) = (
                self._runs.pop().expanded(),
                self._runs.pop().expanded(),
            )
            self._runs.append(
                _Run.build(np.concatenate([older_keys, newer_keys]), np.concatenate([older, newer]))
            )

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Positions of the stored texts sharing at least one band key, ascending, no repeats."""
        parts = [run.lookup(keys) for run in self._runs]
        if self._count:
            parts.append(self._buffered[: self._count][(self._buffer[: self._count] == keys).any(axis=1)])
        found = np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
        return found[np.concatenate([[True], found[1:] != found[:-1]])] if len(found) else found
