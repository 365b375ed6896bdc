"""The one place stages are wired into Ray Data: a source and a list of stage specs become a dataset.

A generation run and a filter pass differ only in their :class:`Source` (where rows come from)
and their list of :class:`~genixer_ray.stages.StageSpec`; :func:`build_dataset` turns both into
Ray Data the same way:

- the specs on the read tasks' pool (the decode stage) run inside each shard's read task;
- each following run of specs sharing an actor pool becomes one ``map_batches`` over that pool's
  actors (one engine per actor, as many calls at once as the pool says), checked after each stage
  (:func:`~genixer_ray.stages.check_contract`);
- between steps rows keep their image, Arrow-encoded so Ray can size it; out of the last step they
  come without it, in :data:`~genixer_ray.schema.GENERATION_SCHEMA`, for the shard writer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import groupby

import polars as pl

from genixer_ray.schema import GENERATION_SCHEMA, SCORING_SCHEMA
from genixer_ray.stages import IMAGE_COLUMNS, Pool, StageSpec, build_stages, drop_image, run_stages

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """Where a run's or pass's rows come from: one read task per shard.

    Args:
        shards: the shard numbers to read, in order.
        load: a module-level function; ``load(shard, chunk=pool.batch_size, **kwargs)`` yields the
            shard's rows in lists of at most ``chunk``.
        kwargs: what every read task passes to ``load`` (picklable).
        schema: the columns of the rows ``load`` yields (image columns included if they carry one).
        pool: the read tasks: CPUs per task, tasks at once, rows per chunk.
    """

    shards: list[int]
    load: Callable[..., Iterator[list[dict]]]
    kwargs: dict
    schema: dict
    pool: Pool


def to_arrow(rows: list[dict], schema: dict):
    """``rows`` as an Arrow table of a fixed ``schema`` (so that all-error and all-ok batches unify)."""
    return pl.DataFrame(rows, schema=schema).to_arrow(compat_level=pl.CompatLevel.oldest())


def scoring_block(rows: list[dict]):
    """Rows that carry their image on to the filter actors, as an Arrow table whose ``pixels`` are
    dictionary-encoded: an image's samples are in the same block, and each image's bytes are in it
    once however many samples it has (Arrow hands every row the same bytes back)."""
    import pyarrow.compute as pc

    table = to_arrow(rows, SCORING_SCHEMA)
    i = table.schema.get_field_index("pixels")
    return table.set_column(i, "pixels", pc.dictionary_encode(table.column(i)))


def carry_block(rows: list[dict], schema: dict):
    """Rows handed on to a later step, with their image: in ``schema`` if it holds the image
    columns (decoded images, one row each), else as a :func:`scoring_block`."""
    if set(IMAGE_COLUMNS) <= set(schema):
        return to_arrow(rows, schema)
    return scoring_block(rows)


def schema_after(specs: list[StageSpec], schema: dict) -> dict:
    """The columns rows have after ``specs``: a stage class may declare its output's ``columns``."""
    for spec in specs:
        schema = getattr(spec.build, "columns", None) or schema
    return schema


def out_block(rows: list[dict], carry: dict | None):
    """A step's output: with the image in the ``carry`` schema when a later step needs it, else
    without, in the written schema."""
    if carry is not None:
        return carry_block(rows, carry)
    return to_arrow(drop_image(rows), GENERATION_SCHEMA)


def read_shard(shard: int, *, load, load_kwargs: dict, chunk: int, specs: list[StageSpec], carry: dict | None):
    """A read task: ``load``'s rows of ``shard`` through the read tasks' stages, in Arrow blocks."""
    stages = build_stages(specs)
    for rows in load(shard, chunk=chunk, **load_kwargs):
        yield out_block(run_stages(stages, rows), carry)


class StageActor:
    """Ray Data actor: builds its pool's stages once (engines, models) and runs them per batch.

    A vLLM actor is called from several threads at once (:attr:`Pool.concurrent_calls`); the
    stages keep no state between calls.
    """

    def __init__(self, specs: list[StageSpec], carry: dict | None):
        self.stages = build_stages(specs)
        self.carry = carry

    def __call__(self, table):
        """Run the stages over one batch; a dead engine kills the actor so Ray restarts it."""
        from genixer_ray.engines.base import EngineError

        try:
            rows = run_stages(self.stages, table.to_pylist())
        except EngineError as e:
            # The engine is unusable: let Ray restart the actor and retry the batch
            # (bounded by max_restarts/max_task_retries); the message lands in the job log.
            log.error(f"genixer-ray: engine failed, restarting actor: {e}")
            os._exit(1)
        return out_block(rows, self.carry)


# Ray names an actor's process and operator after its class (``MapBatches(GeneratorActor)``):
# one class per pool keeps the progress line, process titles and error messages telling.
class GeneratorActor(StageActor):
    """The generator pool's actor: prompt, generate, parse, and the filters on the generator's engine."""


class FilterActor(StageActor):
    """The filter pool's actor: CLIP and the filters with their own models (all filters in a filter pass)."""


POOL_ACTORS = {"generator": GeneratorActor, "filters": FilterActor}


def pool_args(pool, *, concurrent_calls: int = 1) -> dict:
    """``map_batches`` arguments of an actor pool (an :class:`~genixer_ray.config.ActorPoolConfig`):
    autoscaling bounds, resources per actor, restarts.

    With ``concurrent_calls`` > 1 each actor runs that many calls at once in threads (a vLLM
    engine takes every thread's requests); the queue beyond them stays as configured.
    """
    import ray

    threads = {"max_concurrent_calls_per_actor": concurrent_calls, "enable_true_multi_threading": True} if concurrent_calls > 1 else {}
    return {
        "compute": ray.data.ActorPoolStrategy(
            min_size=pool.min_actors, max_size=pool.max_actors,
            max_tasks_in_flight_per_actor=pool.max_tasks_in_flight_per_actor + concurrent_calls - 1, **threads,
        ),
        "num_cpus": pool.cpus_per_actor,
        "num_gpus": pool.gpus_per_actor,
        "resources": pool.actor_resources or None,
        "accelerator_type": pool.accelerator_type,
        # A dead engine: restart the actor and retry its batch a few times, then stop the run.
        # (Ray 2.60 warns that these pass-through args are deprecated but offers no named form.)
        "max_restarts": 2,
        "max_task_retries": 2,
    }


def build_dataset(source: Source, specs: list[StageSpec]):
    """The Ray Data dataset of ``source``'s rows through ``specs``, ready for the shard writer.

    Left to itself, Ray Data reads many small files in one task and a whole run's rows surface at
    its end (no commit, and no resume point, until then); a read task per shard makes rows flow,
    and shards commit, one by one. At most ``source.pool.max_tasks`` read tasks run at once
    (``None``: as Ray Data schedules).
    """
    import ray

    from genixer_ray.shard_source import ShardSource

    in_tasks = [s for s in specs if s.pool.is_tasks]
    steps = [(pool, list(group)) for pool, group in groupby(specs[len(in_tasks):], key=lambda s: s.pool)]
    if any(pool.is_tasks for pool, _ in steps):
        raise ValueError("stages on the read tasks come first, before any actor pool")
    schema = schema_after(in_tasks, source.schema)
    read = {"load": source.load, "load_kwargs": source.kwargs, "chunk": source.pool.batch_size, "specs": in_tasks, "carry": schema if steps else None}
    ds = ray.data.read_datasource(
        ShardSource(source.shards, read_shard, read), override_num_blocks=len(source.shards), num_cpus=source.pool.task_cpus,
        compute=ray.data.TaskPoolStrategy(size=source.pool.max_tasks),
    )
    for i, (pool, group) in enumerate(steps):
        schema = schema_after(group, schema)
        ds = ds.map_batches(
            POOL_ACTORS.get(pool.name, StageActor),
            batch_format="pyarrow",
            batch_size=pool.batch_size,
            fn_constructor_kwargs={"specs": group, "carry": schema if i < len(steps) - 1 else None},
            **pool_args(pool.actors, concurrent_calls=pool.concurrent_calls),
        )
    return ds
