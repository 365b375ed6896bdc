"""What runs on Ray Data's workers: the decode tasks, the generator actors and the filter actors.

The stages themselves (:mod:`genixer_ray.stages`, :mod:`genixer_ray.filters`) are plain
callables over lists of rows; here they are wrapped for Ray Data (Arrow batches in and out, one
engine per actor), placed as :meth:`FiltersConfig.placement` says, and checked after each call.
"""

from __future__ import annotations

import logging
import os

import polars as pl

from genixer_ray.config import ActorPoolConfig, FiltersConfig, GeneratorConfig, RunConfig
from genixer_ray.schema import DECODED_SCHEMA, FILTER_SCHEMA, GENERATION_SCHEMA, SCORING_SCHEMA, row_key
from genixer_ray.seeding import sample_id
from genixer_ray.stages import IMAGE_COLUMNS, DecodeStage, GenerateStage, ParseStage, StageContractError, drop_image, fail
from genixer_ray.store import RunStore

log = logging.getLogger(__name__)


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


def shard_blocks(shards: list[int], load, *, num_cpus: float, tasks: int | None, **load_kwargs):
    """A dataset read by one task per shard, each yielding the blocks of ``load(shard, **load_kwargs)``.

    Left to itself, Ray Data reads many small files in one task and a whole run's rows surface at
    its end (no commit, and no resume point, until then); a task per shard makes rows flow, and
    shards commit, one by one. At most ``tasks`` run at once (``None``: as Ray Data schedules).
    """
    import ray

    from genixer_ray.shard_source import ShardSource

    return ray.data.read_datasource(
        ShardSource(shards, load, load_kwargs), override_num_blocks=len(shards), num_cpus=num_cpus,
        compute=ray.data.TaskPoolStrategy(size=tasks),
    )


def load_shards(shard: int, *, run_url: str, storage_options: dict, input_cfg_json: str, chunk: int):
    """Ray Data read task: the plan rows of ``shard``, decoded, in blocks of ``chunk``."""
    from genixer_ray.config import InputConfig

    store = RunStore(run_url, storage_options)
    stage = DecodeStage(InputConfig.model_validate_json(input_cfg_json))
    rows = store.read_frame(store.plan_name(shard)).to_dicts()
    for start in range(0, len(rows), chunk):
        yield to_arrow(stage(rows[start : start + chunk]), DECODED_SCHEMA)


def load_for_filter(shard: int, *, run_url: str, storage_options: dict, input_cfg_json: str, chunk: int):
    """Ray Data read task: a run's committed ``shard``, its images decoded again, in blocks of ``chunk``.

    Earlier filter columns are cleared (this pass scores anew). An ``ok`` row whose image can no
    longer be read becomes an error row with the decode code; its generated text is kept.
    """
    from genixer_ray.config import InputConfig

    src = RunStore(run_url, storage_options)
    decode = DecodeStage(InputConfig.model_validate_json(input_cfg_json))
    planned = {r["image_id"]: r for r in src.read_frame(src.plan_name(shard)).to_dicts()}
    rows = src.read_frame(src.shard_name(shard)).to_dicts()
    img: dict = {}  # an image's samples are adjacent in a shard: each image is decoded once
    for start in range(0, len(rows), chunk):
        out = []
        for row in rows[start : start + chunk]:
            row |= dict.fromkeys(FILTER_SCHEMA)
            if row["status"] == "ok":
                if img.get("image_id") != row["image_id"]:
                    p = planned[row["image_id"]]
                    img = decode([{"shard": shard, "image_id": p["image_id"], "source": p["source"], "data": p["data"]}])[0]
                if img["status"] == "ok":
                    row |= {c: img[c] for c in IMAGE_COLUMNS}
                else:
                    row = fail(row, img["error_stage"], img["error_code"], img["error_message"])
            out.append(row)
        yield scoring_block(out)


def filter_stages(filters: FiltersConfig, engine: GeneratorConfig | None, generator, *, where: str, filter_pass: bool = False) -> list:
    """The filter stages placed ``where`` (``"generator"`` or ``"filter_actor"``), in the order they run.

    Placement is :meth:`FiltersConfig.placement`'s. A judge or re-answerer naming its own model
    gets an engine built with ``engine``'s settings; one naming none uses ``generator`` (the
    generator actor's engine) or, without one (a filter pass), ``engine`` itself, built here.
    One engine per model and process.
    """
    from genixer_ray.engines.base import get_generator
    from genixer_ray.filters.clip import ClipStage
    from genixer_ray.filters.consistency import ConsistencyStage
    from genixer_ray.filters.judge import JudgeStage

    stages = []
    for name, placed in filters.placement(filter_pass=filter_pass).items():
        if placed != where:
            continue
        sub = getattr(filters, name)
        if name == "clip":
            stages.append(ClipStage(sub))
            continue
        if sub.model is None:
            model = generator or get_generator(engine)
        else:
            model = get_generator(engine.for_model(sub.model))
        stages.append({"consistency": ConsistencyStage, "judge": JudgeStage}[name](sub, model))
    return stages


class GeneratorActor:
    """Ray Data actor: one engine per actor; generate, parse, and the filters that use its engine.

    With ``then_filter_actor`` the rows keep their image for the filter actors that follow. A vLLM
    actor is called from several threads at once (:meth:`EngineConfig.concurrent_batches`); the
    stages keep no state between calls.
    """

    def __init__(self, cfg_json: str, then_filter_actor: bool):
        self.cfg = RunConfig.model_validate_json(cfg_json)
        self.generate = GenerateStage(self.cfg)
        self.stages = [
            self.generate, ParseStage(), *filter_stages(self.cfg.filters, self.cfg.generator, self.generate.generator, where="generator")
        ]
        self.keep_image = then_filter_actor

    def __call__(self, table):
        """Run the stages over one batch; a dead engine kills the actor so Ray restarts it."""
        rows = run_stages(self.stages, table.to_pylist())
        if self.keep_image:
            return scoring_block(rows)
        return to_arrow(drop_image(rows), GENERATION_SCHEMA)


class FilterActor:
    """Ray Data actor: CLIP and the filters with their own models (all filters in a filter pass).

    ``engine_json`` is the engine of the judge and re-answerer (see :func:`filter_stages`), if either
    runs here; on vLLM the actor is called from several threads at once, and the stages keep no
    state between calls.
    """

    def __init__(self, filters_json: str, engine_json: str | None, filter_pass: bool):
        filters = FiltersConfig.model_validate_json(filters_json)
        engine = GeneratorConfig.model_validate_json(engine_json) if engine_json else None
        # A filter pass has no generator actor: the filters that use the generator run here too.
        self.stages = filter_stages(filters, engine, None, where="filter_actor", filter_pass=filter_pass)

    def __call__(self, table):
        """Score one batch; the image is dropped from the rows that come out."""
        return to_arrow(drop_image(run_stages(self.stages, table.to_pylist())), GENERATION_SCHEMA)


def run_stages(stages: list, rows: list[dict]) -> list[dict]:
    """Run ``stages`` in turn, checking each keeps the stage contract (:func:`check_contract`)."""
    from genixer_ray.engines.base import EngineError

    try:
        for stage in stages:
            out = stage(rows)
            check_contract(stage, rows, out)
            rows = out
    except EngineError as e:
        # The engine is unusable: let Ray restart the actor and retry the batch
        # (bounded by max_restarts/max_task_retries); the message lands in the job log.
        log.error(f"genixer-ray: engine failed, restarting actor: {e}")
        os._exit(1)
    return rows


def check_contract(stage, rows_in: list[dict], rows_out: list[dict]) -> None:
    """Raise :class:`StageContractError` unless ``rows_out`` holds one row per row of ``rows_in``, in order.

    A stage with ``samples_per_row`` (the generate stage) must return that many rows per row
    in, samples 0, 1, ... in order. Every row must reach the writer, or its shard never commits;
    a stage that drops, adds or reorders rows is a bug, and is named here rather than found as a
    shard left incomplete.
    """
    fan_out = getattr(stage, "samples_per_row", None)
    keys_in = [row_key(r) for r in rows_in]
    want = [(i, k) for i, _ in keys_in for k in range(fan_out)] if fan_out else keys_in
    got = [row_key(r) if "image_id" in r else None for r in rows_out]
    if want != got:
        lost = sorted(set(want) - set(got))[:3]
        raise StageContractError(
            f"stage {type(stage).__name__} returned {len(got)} rows for {len(want)}"
            + (f" (lost {[sample_id(*k) for k in lost]})" if lost else " (reordered or renamed)")
        )


def pool_args(pool: ActorPoolConfig, *, concurrent_calls: int = 1) -> dict:
    """``map_batches`` arguments of an actor pool: autoscaling bounds, resources per actor, restarts.

    The generator pool and the filter pool are built from the same options this way. With
    ``concurrent_calls`` > 1 each actor runs that many calls at once in threads (a vLLM generator,
    whose engine takes every thread's requests); the queue beyond them stays as configured.
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


def with_filter_actors(ds, filters: FiltersConfig, engine: GeneratorConfig | None, *, filter_pass: bool):
    """``ds`` followed by the pool of filter actors (after the generator actors, or in a filter pass).

    An actor whose judge or re-answerer runs on vLLM is called from several threads at once
    (:meth:`FiltersConfig.concurrent_batches`), as a vLLM generator actor is.
    """
    return ds.map_batches(
        FilterActor,
        batch_format="pyarrow",
        batch_size=filters.batch_size,
        fn_constructor_kwargs={
            "filters_json": filters.model_dump_json(), "engine_json": engine and engine.model_dump_json(), "filter_pass": filter_pass,
        },
        **pool_args(filters, concurrent_calls=filters.concurrent_batches(engine, filter_pass=filter_pass)),
    )
