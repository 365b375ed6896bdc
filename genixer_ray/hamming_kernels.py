"""The compiled loops of :mod:`genixer_ray.hamming`, imported only when a search runs (numba's
import and, the first time, its compilation cost about a second; the compiled code is cached
beside this file, or in numba's user cache where the package cannot be written)."""

import numba
import numpy as np


@numba.njit(inline="always")
def popcount(v):
    """The bits set in a ``uint64`` (the SWAR count; LLVM compiles it to one popcnt instruction)."""
    v = v - ((v >> np.uint64(1)) & np.uint64(0x5555555555555555))
    v = (v & np.uint64(0x3333333333333333)) + ((v >> np.uint64(2)) & np.uint64(0x3333333333333333))
    v = (v + (v >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((v * np.uint64(0x0101010101010101)) >> np.uint64(56))


@numba.njit(cache=True, nogil=True)
def search(queries, hashes, per_owner, offsets, positions, bits, near_masks, far_masks, near_tables, best, owner):
    """The multi-index search of :meth:`genixer_ray.hamming.HammingIndex.nearest` (``best`` and
    ``owner`` updated in place)."""
    # Table by table over every query (one table's offsets and positions stay in cache), the
    # queries in the order of their substring there (neighbouring queries read the same buckets).
    for t in range(positions.shape[0]):
        masks = near_masks if t < near_tables else far_masks
        shift = np.uint64(bits * t)
        keys = (queries >> shift) & np.uint64((1 << bits) - 1)
        for i in np.argsort(keys):
            x = queries[i]
            key = np.int64(keys[i])
            d_best = best[i]
            o_best = owner[i]
            for m in masks:
                k = key ^ m
                for j in range(offsets[t, k], offsets[t, k + 1]):
                    p = positions[t, j]
                    d = popcount(x ^ hashes[p])
                    if d <= d_best:  # rare: the owner (a division) only then
                        o = np.int64(p) // per_owner
                        if d < d_best or o < o_best:
                            d_best = d
                            o_best = o
            best[i] = d_best
            owner[i] = o_best


@numba.njit(cache=True, nogil=True)
def pairs(groups, hashes, radius):
    """The pairs of :func:`genixer_ray.hamming.pairs_within`."""
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
