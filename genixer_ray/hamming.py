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
(1 MiB whatever the size). The search is compiled with numba: a query's lookups are a loop over
small buckets, which numpy would run one tiny array operation at a time.
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


@functools.cache
def _popcount():
    import numba

    @numba.njit(inline="always")
    def popcount(v):  # the SWAR bit count; LLVM compiles it to one popcnt instruction
        v = v - ((v >> np.uint64(1)) & np.uint64(0x5555555555555555))
        v = (v & np.uint64(0x3333333333333333)) + ((v >> np.uint64(2)) & np.uint64(0x3333333333333333))
        v = (v + (v >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
        return np.int64((v * np.uint64(0x0101010101010101)) >> np.uint64(56))

    return popcount


@functools.cache
def _search_kernel():
    # Compiled on first use, not at import: a process that never searches pays nothing for it.
    import numba

    _popcount_ = _popcount()

    @numba.njit(cache=True, nogil=True)
    def search(queries, hashes, per_owner, offsets, positions, near_masks, far_masks, near_tables, best, owner):
        # Table by table over every query (one table's offsets and positions stay in cache), the
        # queries in the order of their substring there (neighbouring queries read the same buckets).
        for t in range(positions.shape[0]):
            masks = near_masks if t < near_tables else far_masks
            shift = np.uint64(_BITS * t)
            keys = (queries >> shift) & np.uint64(_VALUES - 1)
            for i in np.argsort(keys):
                x = queries[i]
                key = np.int64(keys[i])
                d_best = best[i]
                o_best = owner[i]
                for m in masks:
                    k = key ^ m
                    for j in range(offsets[t, k], offsets[t, k + 1]):
                        p = positions[t, j]
                        d = _popcount_(x ^ hashes[p])
                        if d <= d_best:  # rare: the owner (a division) only then
                            o = np.int64(p) // per_owner
                            if d < d_best or o < o_best:
                                d_best = d
                                o_best = o
                best[i] = d_best
                owner[i] = o_best

    return search


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
            _search_kernel()(queries, self.hashes, self.per_owner, self.offsets, self.positions,
                             _masks(s), _masks(s - 1), a + 1, best, owner)
        return best, owner


@functools.cache
def _pairs_kernel():
    import numba

    popcount = _popcount()

    @numba.njit(cache=True, nogil=True)
    def pairs(groups, hashes, radius):
        # Rows sorted by (group, hash): in each group, each run of one hash joined to its first,
        # then the runs' firsts compared pairwise.
        a, b = [np.int64(0)][:0], [np.int64(0)][:0]
        n = len(groups)
        i = 0
        while i < n:
            j = i + 1
            while j < n and groups[j] == groups[i]:
                j += 1
            firsts = [np.int64(i)][:0]
            for k in range(i, j):
                if k > i and hashes[k] == hashes[k - 1]:
                    a.append(firsts[-1])
                    b.append(k)
                else:
                    firsts.append(k)
            for p in range(len(firsts)):
                for q in range(p + 1, len(firsts)):
                    if popcount(hashes[firsts[p]] ^ hashes[firsts[q]]) <= radius:
                        a.append(firsts[p])
                        b.append(firsts[q])
            i = j
        return np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)

    return pairs


def pairs_within(groups: np.ndarray, hashes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs ``(i, j)`` that share a group and whose ``hashes`` differ in at most ``radius`` bits
    (rows of one hash joined to the first of them, then the distinct hashes compared pairwise, so a
    group of many copies of one picture costs one pass). Rows must be sorted by ``(groups, hashes)``."""
    if len(groups) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return _pairs_kernel()(np.ascontiguousarray(groups, dtype=np.uint64), np.ascontiguousarray(hashes, dtype=np.uint64), radius)
