"""The filter stages' specs: CLIP, the judge, self-consistency and rating, each on the pool that holds its model.

The scoring code is in :mod:`genixer_ray.filters`; here each filter becomes a :class:`StageSpec`.
Engines are built where the stage runs, through :func:`~genixer_ray.engines.base.get_generator`,
which keeps one engine per configuration and process: a judge without an engine of its own,
placed on the generator's actors, gets the generator's own engine, not a second one; filters on
the filter actors whose engines are equal share one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from genixer_ray.stages import Pool, StageSpec

if TYPE_CHECKING:
    from genixer_ray.config import (
        ActorPoolConfig,
        ClipFilterConfig,
        ConsistencyConfig,
        EngineConfig,
        FiltersConfig,
        JudgeConfig,
        RatingConfig,
    )


def clip_stage(cfg: ClipFilterConfig):
    """The CLIP stage (its model is built here, in the process that runs it)."""
    from genixer_ray.filters.clip import ClipStage

    return ClipStage(cfg)


def judge_stage(cfg: JudgeConfig, engine: EngineConfig):
    """The judge stage on this process's engine for ``engine``."""
    from genixer_ray.engines.base import get_generator
    from genixer_ray.filters.judge import JudgeStage

    return JudgeStage(cfg, get_generator(engine))


def consistency_stage(cfg: ConsistencyConfig, engine: EngineConfig):
    """The self-consistency stage on this process's engine for ``engine``."""
    from genixer_ray.engines.base import get_generator
    from genixer_ray.filters.consistency import ConsistencyStage

    return ConsistencyStage(cfg, get_generator(engine))


def rating_stage(cfg: RatingConfig, engine: EngineConfig):
    """The rating stage on this process's engine for ``engine``."""
    from genixer_ray.engines.base import get_generator
    from genixer_ray.filters.rating import RatingStage

    return RatingStage(cfg, get_generator(engine))


# Requests each filter asks per row (its engine's calls at once are sized by them).
def _asked(filters: FiltersConfig) -> dict[str, int]:
    return {"judge": 1, "consistency": filters.consistency.samples, "rating": len(filters.rating.axes)}


def placement(filters: FiltersConfig, on_generator: set[str]) -> dict[str, str]:
    """Where each enabled filter runs, in the order they run: ``"generator"`` or ``"filter_actor"``.

    The one place this is decided. ``on_generator`` names the filters that use the generator's
    own engine in a generation run (those without an engine of their own in ``engines``): they run
    on the generator's actors, with no second engine. CLIP and every other filter run on the filter
    actors; a filter pass has no generator actor, so its ``on_generator`` is empty.
    """
    return {n: "generator" if n in on_generator else "filter_actor" for n in filters.enabled()}


def filter_pool(filters: FiltersConfig, pool: ActorPoolConfig, engines: dict[str, EngineConfig], placed: dict[str, str]) -> Pool:
    """The filter actors' pool: its options, batch size, and calls at once.

    An actor whose judge, re-answerer or rater runs on vLLM is called from several threads at once,
    as a vLLM generator actor is: enough calls for its engine's ``max_num_seqs`` sequences while one
    more waits, counted for the filter asking the most per call (a re-answerer asks
    ``consistency.samples`` per row); one call when any of them runs on transformers.
    """
    asked = _asked(filters)
    calls = [engines[n].concurrent_batches(pool.batch_size, asked[n]) for n, at in placed.items() if at == "filter_actor" and n in asked]
    return Pool("filters", pool.batch_size, actors=pool, concurrent_calls=min(calls, default=1))


def filter_specs(
    filters: FiltersConfig, engines: dict[str, EngineConfig], pool: ActorPoolConfig, *, generator: Pool | None = None, on_generator: set[str] = frozenset(),
) -> list[StageSpec]:
    """The enabled filters' specs, in the order they run, each on its pool.

    ``engines`` holds the engine of each filter that asks a model; placement is :func:`placement`'s:
    the filters in ``on_generator`` on the ``generator`` pool (a generation run's), the others on
    the filter actors (``pool``).
    """
    placed = placement(filters, on_generator)
    pools = {"generator": generator, "filter_actor": filter_pool(filters, pool, engines, placed)}
    build = {"judge": judge_stage, "consistency": consistency_stage, "rating": rating_stage}
    return [
        StageSpec(name, clip_stage, (filters.clip,), pools[at]) if name == "clip"
        else StageSpec(name, build[name], (getattr(filters, name), engines[name]), pools[at])
        for name, at in placed.items()
    ]
