"""Where output rows land: the shard writer (the run's summary and manifest: :mod:`genixer_ray.summary`).

Rows come back to the driver in any order, possibly twice (Ray retries batches). The writer
collects each shard's rows by (image id, sample) and commits the shard the moment its last row arrives;
memory is bounded by the rows in flight, not by the dataset.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from genixer_ray.errors import RunFailed, StageContractError
from genixer_ray.filters.health import alarm_text
from genixer_ray.schema import code_counts, row_key, to_frame
from genixer_ray.store import RunStore
from genixer_ray.summary import EngineTally

log = logging.getLogger(__name__)

# rows of a whole shard -> (the rows with their decisions, counts to add to its marker)
CommitStep = Callable[[list[dict]], tuple[list[dict], dict]]


class ShardWriter:
    """Collects output rows per shard and commits each shard once all its rows have arrived.

    Committing a shard is three named steps: ``decide`` (the commit step given by the run: keep
    decisions and the counts they add), :func:`~genixer_ray.schema.to_frame` (the schema check),
    and :meth:`RunStore.commit_shard` (the shard file, then its marker). With ``engine_stats``
    (a generation run) markers and progress (over committed shards) say how full the generator's
    engine ran.

    On an object store the last step, three round trips (shard, its check, marker), runs for up to
    ``commits_in_flight`` shards at once (default 8; 1 on a local disk, where it runs in the
    caller), so that the round trips overlap (BENCHMARKS.md, "Object stores"). :meth:`finish`
    waits for every commit; a failed one raises from :meth:`add` or :meth:`finish`.
    """

    def __init__(
        self, store: RunStore, expected: dict[int, int], decide: CommitStep, *,
        label: str = "generate", every_s: float = 10.0, engine_stats: bool = False, commits_in_flight: int | None = None,
    ):
        self.store = store
        self.expected = expected
        self.decide = decide
        self.label = label
        self.buffers: dict[int, dict[tuple[str, int], dict]] = {}
        self.every_s = every_s
        self.rows = 0
        self.by_error: Counter = Counter()
        self.committed = 0
        self.start = time.monotonic()
        self.first_row: float | None = None  # the rate counts from the first row (engines start before)
        self.last_report = 0.0
        self.reported_rows = -1
        self.engine = EngineTally() if engine_stats else None
        self.in_flight = commits_in_flight or store.requests_in_flight
        self.pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="commit") if self.in_flight > 1 else None
        self.commits: deque[Future] = deque()

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Take output rows (any shards, any order, possibly repeated) and commit full shards."""
        for r in rows:
            k = int(r["shard"])
            if k not in self.expected:
                raise StageContractError(f"row {r['image_id']!r} belongs to shard {k}, which this run does not process")
            buf = self.buffers.setdefault(k, {})
            key = row_key(r)
            if key in buf:
                continue  # at-least-once delivery: a retried batch came back twice
            buf[key] = r
            self.rows += 1
            self.first_row = self.first_row or time.monotonic()
            if r.get("error_code"):
                self.by_error[r["error_code"]] += 1
            if len(buf) == self.expected[k]:
                self._commit(k)
        if self.pool is not None:
            self._settle(keep=self.in_flight)  # counts the commits done meanwhile, waits for none
        self._report()

    def _commit(self, k: int) -> None:
        # The commit step (keep decisions) sees the whole shard, in (image id, sample) order.
        buf = self.buffers.pop(k)
        rows, decided = self.decide([buf[key] for key in sorted(buf)])
        df = to_frame(rows)
        counts = {
            "by_status": dict(Counter(df["status"].to_list())),
            "by_error": dict(Counter(c for c in df["error_code"].to_list() if c)),
            "by_task": dict(Counter(t for t in df["parsed_task"].to_list() if t)),
            **decided,
        }
        matched = df.filter(df["contamination_benchmark"].is_not_null())
        if matched.height:  # rows per "benchmark/tier" (a skipped image's samples each count)
            counts["contamination"] = dict(Counter(f"{b}/{t}" for b, t in matched.select("contamination_benchmark", "contamination_tier").iter_rows()))
        for alarm in counts.get("alarms", []):  # the run goes on; the person watching is told
            log.warning(f"[rating] {alarm_text(alarm | {'shard': k})}")
        if self.engine is not None:
            # Counted once per shard: the marker's sums, and the progress line's over committed shards.
            counts["engine"] = EngineTally.of(rows).sums()
            self.engine.add(counts["engine"])
        if self.pool is None:
            self.store.commit_shard(k, df, counts)
            self.committed += 1
            return
        self.commits.append(self.pool.submit(self.store.commit_shard, k, df, counts))
        self._settle(keep=self.in_flight - 1)

    def _settle(self, keep: int = 0) -> None:
        # Waits, oldest first, until at most ``keep`` commits are in flight; counts every finished one.
        while self.commits and (len(self.commits) > keep or self.commits[0].done()):
            self.commits.popleft().result()  # a failed commit's error, raised here
            self.committed += 1

    def _report(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if (not force and now - self.last_report < self.every_s) or self.rows == self.reported_rows:
            return
        self.last_report, self.reported_rows = now, self.rows
        total = sum(self.expected.values())
        flowing = self.first_row is not None and now - self.first_row >= 1.0
        if self.first_row is not None and not flowing and self.rows < total:
            # A rate over the engines' start-up would promise an ETA many times the real one.
            speed = f"first rows after {format_duration(self.first_row - self.start)}"
        else:
            # Steady rate once rows flow (engine start-up excluded); a run done within a second of
            # its first rows, or without rows, since the start.
            rate = self.rows / max(now - (self.first_row if flowing else self.start), 1e-9)
            eta = f", ETA {format_duration((total - self.rows) / rate)}" if 0 < self.rows < total else ""
            speed = f"{rate:.2f} rows/s{eta}"
        log.info(
            f"[{self.label}] {self.rows}/{total} rows, {self.committed}/{len(self.expected)} shards, "
            f"{speed}, {code_counts(self.by_error)}{self.engine.line() if self.engine is not None else ''}"
        )

    def finish(self) -> None:
        """Wait for the commits in flight, check that every expected shard was committed; print the final progress line."""
        if self.pool is not None:
            self._settle()
            self.pool.shutdown()
        self._report(force=True)
        if self.buffers:
            missing = {k: self.expected[k] - len(v) for k, v in self.buffers.items()}
            raise RunFailed(f"shards left incomplete (shard: rows missing): {missing}")


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``: an ETA a person reads at a glance."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _resume_hint(writer: ShardWriter) -> str:
    return f"{writer.committed} shard(s) were committed; re-run the same command to resume."


def output_blocks(ds):
    """A dataset's output blocks as Arrow tables, each as soon as it is done.

    Read from Ray Data's block references, not through ``Dataset.iter_batches``: its iterator sends
    the dataset's whole statistics, a record per block run so far, to Ray Data's stats actor every
    5 s, a pickle that grows with the run (2.7 MB at 3,907 shards) and that took the driver's peak
    memory up with it (BENCHMARKS.md, "Scale").
    """
    import ray
    from ray.data.block import BlockAccessor

    for bundle in ds.iter_internal_ref_bundles():
        for block in ray.get(bundle.block_refs):
            yield BlockAccessor.for_block(block).to_arrow()


def stream_into(ds, writer: ShardWriter, what: str) -> None:
    """Feed a dataset's output rows to ``writer`` until every expected shard is committed."""
    import ray
    from ray.data.exceptions import ExecutionTimeoutError

    try:
        # Closed on the way out, so that a writer's error stops Ray Data's executor there and then.
        with contextlib.closing(output_blocks(ds)) as blocks:
            for block in blocks:
                writer.add(block.to_pylist())
    except ExecutionTimeoutError as e:
        # Ray Data's own advice names its context setting; the run's is ray.actor_start_timeout_s.
        stalled = "\n".join(line for line in str(e).splitlines() if line.startswith("  - "))
        raise RunFailed(
            f"{what} stopped: nothing moved for ray.actor_start_timeout_s "
            f"({ds.context.execution_no_progress_timeout_s:g} s): an actor that cannot start or restart (resources no node has), "
            f"an engine slower to start than that, or one that hangs.\n{stalled}\n{_resume_hint(writer)}"
        ) from e
    except ray.exceptions.RayError as e:
        raise RunFailed(f"{what} stopped: {type(e).__name__}: {e}\n{_resume_hint(writer)}") from e
    writer.finish()
