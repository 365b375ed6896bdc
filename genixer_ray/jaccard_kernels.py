"""The compiled loops of :mod:`genixer_ray.question_clusters`, imported only when a partition's edges
are found (numba's compiled code is cached as :mod:`genixer_ray.hamming_kernels`' is)."""

import numba
import numpy as np


@numba.njit(inline="always")
def _root(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@numba.njit(inline="always")
def overlap(tokens, starts, i, j):
    """The size of the intersection of two sorted, distinct arrays, ``tokens[starts[i]:starts[i + 1]]``
    and ``j``'s (a merge)."""
    p, q, p_end, q_end, inter = starts[i], starts[j], starts[i + 1], starts[j + 1], 0
    while p < p_end and q < q_end:
        if tokens[p] == tokens[q]:
            inter += 1
            p += 1
            q += 1
        elif tokens[p] < tokens[q]:
            p += 1
        else:
            q += 1
    return inter


@numba.njit(cache=True, nogil=True)
def group_forest(group_starts, members, tokens, starts, threshold):
    """Edges of a spanning forest of the graph that joins two sets of one group when their
    Jaccard is >= ``threshold``. Set ``i`` is ``tokens[starts[i]:starts[i + 1]]`` (sorted,
    distinct); ``members[group_starts[g]:group_starts[g + 1]]`` are group ``g``'s sets, smallest
    first. A pair the forest already joins is not compared (only the components count), nor one
    whose sizes differ too much to reach ``threshold`` (|y| >= t |x| is needed). Returns the
    edges' two arrays of set numbers."""
    parent = np.arange(len(starts) - 1)
    a, b = [np.int64(0)][:0], [np.int64(0)][:0]
    for g in range(len(group_starts) - 1):
        for x in range(group_starts[g], group_starts[g + 1]):
            i = members[x]
            size_i = starts[i + 1] - starts[i]
            for y in range(x + 1, group_starts[g + 1]):
                j = members[y]
                size_j = starts[j + 1] - starts[j]
                if threshold * size_j > size_i:
                    break  # the group's later sets are larger still
                ri, rj = _root(parent, i), _root(parent, j)
                if ri == rj:
                    continue
                inter = overlap(tokens, starts, i, j)
                if inter >= threshold * (size_i + size_j - inter):
                    parent[max(ri, rj)] = min(ri, rj)
                    a.append(i)
                    b.append(j)
    return np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def gram_sets(points, lengths, shingle):
    """Each text's character ``shingle``-grams as sorted, distinct integers (``shingle`` code points
    of 21 bits each: exact), all in one array, and each text's start there (``n + 1``). ``points``:
    the texts' code points one after another, ``lengths`` their lengths. A text of ``shingle``
    characters or fewer is one gram, itself (its missing characters read as 0)."""
    n = len(lengths)
    starts = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        starts[i + 1] = starts[i] + max(lengths[i] - shingle + 1, 1)
    grams = np.empty(starts[n], dtype=np.int64)
    at = 0
    for i in range(n):
        count = starts[i + 1] - starts[i]
        for k in range(count):
            v = np.int64(0)
            for c in range(shingle):
                v = (v << 21) | (points[at + k + c] if k + c < lengths[i] else 0)
            grams[starts[i] + k] = v
        grams[starts[i] : starts[i + 1]] = np.sort(grams[starts[i] : starts[i + 1]])
        at += lengths[i]
    # Repeated grams of a text dropped: the arrays shrink in place, the starts with them.
    out = np.zeros(n + 1, dtype=np.int64)
    w = 0
    for i in range(n):
        for p in range(starts[i], starts[i + 1]):
            if p == starts[i] or grams[p] != grams[p - 1]:
                grams[w] = grams[p]
                w += 1
        out[i + 1] = w
    return grams[:w], out


@numba.njit(cache=True, nogil=True)
def components(n, a, b):
    """A label per item ``0..n-1``: the smallest item of its connected component of the edges
    ``a[k] - b[k]`` (union-find; a root is always its set's smallest item)."""
    parent = np.arange(n)
    for k in range(len(a)):
        ra, rb = _root(parent, a[k]), _root(parent, b[k])
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    for i in range(n):
        parent[i] = _root(parent, i)
    return parent
