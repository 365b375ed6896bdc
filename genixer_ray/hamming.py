"""Exact search of 64-bit hashes within a Hamming radius: a multi-index of four 16-bit substrings
(:class:`HammingIndex`, decontamination's lookups), and the pairs within a radius among hashes
that share a key (:func:`pairs_within`, image dedup's band groups).

Multi-index hashing (Norouzi, Punjani and Fleet, "Fast Search in Hamming Space with Multi-Index
Hashing", CVPR 2012): every hash is cut into four 16-bit substrings, and each substring position
is a table that lists, for each of the 65,536 values, the hashes holding it there (a counting
sort: one offset per value, one 4-byte position per hash). Two hashes within ``r`` bits of each
other share a nearly equal substring, by the paper's refined pigeonhole: with ``r = 4s + a``
(``0 <= a < 4``), one of the first ``a + 1`` substrings differs in at most ``s`` bits, or one of the
others in at most ``s - 1`` (were all of them further apart, the hashes would differ in at least
``(a + 1)(s + 1) + (3 - a)s = r + 1`` bits). A query therefore looks up, in the first ``a + 1``
tables, every value within ``s`` bits of its substring, in the others every value within ``s - 1``
bits, and compares the hashes found there whole: at radius 8, 188 lookups and about 1,100 of
400,000 hashes compared, against all 400,000 by a scan (BENCHMARKS.md, "Fingerprints").

Memory: the hashes (8 bytes each), four positions per hash (16 bytes) and four tables of offsets
(1 MiB whatever the size). The search is compiled with numba (:mod:`genixer_ray.hamming_kernels`):
a query's lookups are a loop over small buckets, which numpy would run one tiny array operation at
a time.
"""

from __future__ import annotations

import functools
from itertools import combinations

import numpy as np

_TABLES = 4
_BITS = 16
_VALUES = 1 << _BITS


@functools.cache
def _masks(bits: int) -> np.ndarray:
    """Every 16-bit value with at most ``bits`` bits set (empty for a negative ``bits``)."""
    return np.array([sum(1 << i for i in c) for n in range(bits + 1) for c in combinations(range(_BITS), n)], dtype=np.int64)


class HammingIndex:
    """Hashes grouped by owner (an ``(owners, k)`` ``uint64`` array: ``k`` hashes per owner, e.g. an
    evaluation image and its border crops), searched for each query's nearest owner within a radius."""

    def __init__(self, hashes: np.ndarray):
        hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
        self.per_owner = hashes.shape[1] if hashes.ndim == 2 else 1
        self.hashes = hashes.reshape(-1)
        self.offsets = np.zeros((_TABLES, _VALUES + 1), dtype=np.int64)
        self.positions = np.empty((_TABLES, len(self.hashes)), dtype=np.uint32)
        for t in range(_TABLES):
            keys = ((self.hashes >> np.uint64(_BITS * t)) & np.uint64(_VALUES - 1)).astype(np.int64)
            self.positions[t] = np.argsort(keys, kind="stable")
            np.cumsum(np.bincount(keys, minlength=_VALUES), out=self.offsets[t, 1:])

    def nearest(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """For each query hash: the smallest distance to any indexed hash within ``radius`` and its
        owner (the first owner at that distance), or ``(radius + 1, -1)`` where none is that near."""
        queries = np.ascontiguousarray(queries, dtype=np.uint64)
        best = np.full(len(queries), radius + 1, dtype=np.int64)
        owner = np.full(len(queries), -1, dtype=np.int64)
        if len(queries) and len(self.hashes):
            s, a = divmod(radius, _TABLES)
            from genixer_ray.hamming_kernels import search

            search(queries, self.hashes, self.per_owner, self.offsets, self.positions, _BITS, _masks(s), _masks(s - 1), a + 1, best, owner)
        return best, owner


def pairs_within(groups: np.ndarray, hashes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs ``(i, j)`` that share a group and whose ``hashes`` differ in at most ``radius`` bits
    (rows of one hash joined to the first of them, then the distinct hashes compared pairwise, so a
    group of many copies of one picture costs one pass). Rows must be sorted by ``(groups, hashes)``."""
    if len(groups) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    from genixer_ray.hamming_kernels import pairs

    return pairs(np.ascontiguousarray(groups, dtype=np.uint64), np.ascontiguousarray(hashes, dtype=np.uint64), radius)
