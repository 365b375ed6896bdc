"""Round trips overlapped: a function over many items on a few threads, results in order.

An object store answers each request after a round trip; per-shard requests (plan files, commits,
verify's, export's, publish's and the report's reads) overlap them this way (BENCHMARKS.md,
"Object stores").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


def overlapped(fn: Callable[[Any], Any], items: Iterable, in_flight: int) -> Iterator:
    """``fn`` over ``items`` on up to ``in_flight`` threads, the results in ``items``' order.

    At most ``in_flight`` calls are pending at once, so the items taken ahead (and their results)
    stay bounded however many there are; a call's error is raised when its result is reached. For
    the round trips of an object store, which then overlap; ``in_flight`` 1 calls in the caller.
    """
    if in_flight <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(in_flight, thread_name_prefix="store") as pool:
        pending: deque[Future] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
