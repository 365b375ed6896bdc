"""The multi-index Hamming search gives exactly what a scan of every hash gives."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from genixer_ray.hamming import HammingIndex

hashes64 = st.integers(min_value=0, max_value=2**64 - 1)


def scan(indexed: np.ndarray, query: int, radius: int) -> tuple[int, int]:
    """The brute force: every owner's nearest hash, the first owner at the smallest distance."""
    d = np.bitwise_count(indexed ^ np.uint64(query)).min(axis=1)
    i = int(d.argmin()) if len(d) else -1
    return (int(d[i]), i) if len(d) and d[i] <= radius else (radius + 1, -1)


@settings(max_examples=60, deadline=None)
@given(
    owners=st.lists(st.lists(hashes64, min_size=2, max_size=2), max_size=40),
    queries=st.lists(st.tuples(hashes64, st.integers(0, 39), st.sets(st.integers(0, 63), max_size=14)), min_size=1, max_size=30),
    radius=st.integers(0, 24),
)
def test_nearest_equals_a_scan(owners, queries, radius):
    indexed = np.array(owners, dtype=np.uint64).reshape(-1, 2)
    # Half the queries are indexed hashes with some bits flipped (near ones), half random.
    q = [h if not len(indexed) or k % 2 else int(indexed[at % len(indexed), at % 2]) ^ sum(1 << b for b in flips)
         for k, (h, at, flips) in enumerate(queries)]
    best, owner = HammingIndex(indexed).nearest(np.array(q, dtype=np.uint64), radius)
    assert [(int(d), int(o)) for d, o in zip(best, owner, strict=True)] == [scan(indexed, x, radius) for x in q]


def test_ties_go_to_the_first_owner_and_far_hashes_are_not_found():
    a = 0x0123456789ABCDEF
    indexed = np.array([[a ^ 0b111, 0], [a ^ 0b1100_0000, 1], [a ^ (0xFF << 40), 2]], dtype=np.uint64)  # 3, 2, 8 bits from a
    best, owner = HammingIndex(indexed).nearest(np.array([a, a ^ 0b0100_0000], dtype=np.uint64), 2)
    assert (best.tolist(), owner.tolist()) == ([2, 1], [1, 1])  # owner 2 (8 bits away) is beyond the radius
    tied = np.array([[a ^ 1], [a ^ 2], [a]], dtype=np.uint64)
    best, owner = HammingIndex(tied).nearest(np.array([a ^ 3, ~np.uint64(a)], dtype=np.uint64), 8)
    assert (best.tolist(), owner.tolist()) == ([1, 9], [0, -1])  # owners 0 and 1 are both 1 bit from a ^ 3
