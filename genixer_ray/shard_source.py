"""A Ray Data source of one read task per shard (see :func:`genixer_ray.builder.build_dataset`).

Each read task loads its shard's rows and runs the read tasks' stages (decode) where it runs. The driver still puts one
object per shard into the object store (Ray Data's read operator puts each read task, here a shard
number and the shared loader arguments), but no longer an Arrow block with its schema and metadata
as ``ray.data.from_items`` over the shard numbers did (BENCHMARKS.md, "Scale")."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata


class _ReadShard:
    """A read task's function: ``load(shard, **kwargs)``; every task shares one ``kwargs``."""

    def __init__(self, shard: int, load: Callable[..., Iterator], kwargs: dict):
        self.shard, self.load, self.kwargs = shard, load, kwargs

    def __call__(self) -> Iterator:
        return self.load(self.shard, **self.kwargs)


class ShardSource(Datasource):
    """One read task per shard of ``shards``, in that order, each yielding ``load(shard, **kwargs)``."""

    def __init__(self, shards: list[int], load: Callable[..., Iterator], kwargs: dict):
        super().__init__()
        self.shards, self.load, self.kwargs = shards, load, kwargs

    def estimate_inmemory_data_size(self) -> None:
        """Unknown until decoded (images of any size)."""
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None) -> list[ReadTask]:
        """One task per shard, whatever ``parallelism`` asks: a shard is the unit of commit and resume."""
        meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
        return [ReadTask(_ReadShard(k, self.load, self.kwargs), meta, per_task_row_limit=per_task_row_limit) for k in self.shards]
