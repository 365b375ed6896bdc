"""The filter stages' specs: CLIP, the judge, self-consistency and rating, each on the pool that holds its model.

The scoring code is in :mod:`genixer_ray.filters`; here each filter becomes a :class:`StageSpec`.
Engines are built where the stage runs, through :func:`~genixer_ray.engines.base.get_generator`,
which keeps one engine per configuration and process: a judge that names no model, placed on the
generator's actors, gets the generator's own engine, not a second one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from genixer_ray.stages import Pool, StageSpec

if TYPE_CHECKING:
    from genixer_ray.config import ClipFilterConfig, ConsistencyConfig, FiltersConfig, GeneratorConfig, JudgeConfig, RatingConfig


def clip_stage(cfg: ClipFilterConfig):
    """The CLIP stage (its model is built here, in the process that runs it)."""
    from genixer_ray.filters.clip import ClipStage

    return ClipStage(cfg)


def judge_stage(cfg: JudgeConfig, engine: GeneratorConfig):
    """The judge stage on this process's engine for ``engine``."""
    from genixer_ray.engines.base import get_generator
    from genixer_ray.filters.judge import JudgeStage

    return JudgeStage(cfg, get_generator(engine))


def consistency_stage(cfg: ConsistencyConfig, engine: GeneratorConfig):
    """The self-consistency stage on this process's engine for ``engine``."""
    from genixer_ray.engines.base import get_generator
    from genixer_ray.filters.consistency import ConsistencyStage

    return ConsistencyStage(cfg, get_generator(engine))


def rating_stage(cfg: RatingConfig, engine: GeneratorConfig):
    """The rating stage on this process's engine for ``engine``."""
    from genixer_ray.engines.base import get_generator
    from genixer_ray.filters.rating import RatingStage

    return RatingStage(cfg, get_generator(engine))


def filter_pool(filters: FiltersConfig, engine: GeneratorConfig | None, *, filter_pass: bool) -> Pool:
    """The filter actors' pool: ``filters``' pool options, batch size, and calls at once.

    An actor whose judge or re-answerer runs on vLLM is called from several threads at once
    (:meth:`FiltersConfig.concurrent_batches`), as a vLLM generator actor is.
    """
    return Pool(
        "filters", filters.batch_size, actors=filters,
        concurrent_calls=filters.concurrent_batches(engine, filter_pass=filter_pass),
    )


def filter_specs(filters: FiltersConfig, engine: GeneratorConfig | None, *, generator: Pool | None) -> list[StageSpec]:
    """The enabled filters' specs, in the order they run, each on its pool.

    Placement is :meth:`FiltersConfig.placement`'s. A judge or re-answerer naming its own model
    gets an engine with ``engine``'s settings; one naming none uses ``engine`` itself (the run's
    generator), on the ``generator`` pool in a generation run. A filter pass passes no
    ``generator`` pool: every filter runs on the filter actors.
    """
    filter_pass = generator is None
    pools = {"generator": generator, "filter_actor": filter_pool(filters, engine, filter_pass=filter_pass)}
    specs = []
    for name, placed in filters.placement(filter_pass=filter_pass).items():
        sub = getattr(filters, name)
        if name == "clip":
            specs.append(StageSpec(name, clip_stage, (sub,), pools[placed]))
            continue
        model_engine = engine if sub.model is None else engine.for_model(sub.model)
        build = {"judge": judge_stage, "consistency": consistency_stage, "rating": rating_stage}[name]
        specs.append(StageSpec(name, build, (sub, model_engine), pools[placed]))
    return specs
