"""A generation run on Ray Data: plan -> (image dedup) -> decode tasks -> generator actors -> (filter actors) -> writer.

The driver lists the input into a plan of fixed shards once (streaming, one shard in memory),
then streams only the uncommitted shards through the run's stages (:func:`generation_stages`,
wired by :func:`~genixer_ray.builder.build_dataset`), a read task per shard. Output rows come
back block by block (:func:`~genixer_ray.writer.output_blocks`);
:class:`~genixer_ray.writer.ShardWriter` commits each shard the moment its last row arrives, so a
killed run resumes from its last commit.
"""

from __future__ import annotations

import functools
import logging
import time
from datetime import UTC, datetime

from genixer_ray.builder import Source, build_dataset
from genixer_ray.config import ConfigError, InputConfig, RunConfig, redact, redacted
from genixer_ray.decontam.index import prepare_index
from genixer_ray.diversity import write_diversity
from genixer_ray.filters.decide import decide_shard
from genixer_ray.fingerprints import FINGERPRINT_TABLE, write_fingerprint_table
from genixer_ray.image_dedup import MARKER as IMAGE_DEDUP_MARKER
from genixer_ray.image_dedup import cluster_images, saved
from genixer_ray.inputs import iter_inputs
from genixer_ray.models import input_side
from genixer_ray.ray_start import decode_tasks, ensure_ray_data, off_driver, use_system_arrow_allocator
from genixer_ray.schema import ROW_COLUMNS
from genixer_ray.stages import Pool, StageSpec
from genixer_ray.stages.contamination import ContaminationStage, QuestionStage
from genixer_ray.stages.decode import DecodeStage
from genixer_ray.stages.filters import filter_specs
from genixer_ray.stages.generate import GenerateStage
from genixer_ray.stages.image_dedup import DuplicateImageStage
from genixer_ray.stages.parse import ParseStage
from genixer_ray.stages.prompt import PromptStage
from genixer_ray.store import RunStore, plan_samples
from genixer_ray.summary import RunSummary, write_manifest
from genixer_ray.writer import ShardWriter, stream_into

log = logging.getLogger(__name__)


def run_url(cfg: RunConfig) -> str:
    """The run's output folder URL: ``{output.path}/{name}``."""
    return f"{cfg.output.path.rstrip('/')}/{cfg.name}"


def _ensure_plan(store: RunStore, cfg: RunConfig) -> dict:
    plan = store.plan()
    wanted = redacted(cfg.input)
    if plan is None:
        log.info("[plan] listing %s into shards of %d", redact(cfg.input.source), cfg.output.shard_size)
        return store.write_plan(
            iter_inputs(cfg.input), cfg.output.shard_size, meta={"input": wanted, "samples_per_image": cfg.samples_per_image}
        )
    # A setting added since the plan was written counts at its default.
    planned = redacted(InputConfig()) | (plan.get("input") or {})
    if planned != wanted:
        raise ConfigError(
            f"run {cfg.name!r} was planned with input {planned}, not {wanted}; "
            "resume with the same input or choose another run name"
        )
    if plan_samples(plan) != cfg.samples_per_image:
        raise ConfigError(
            f"samples_per_image: run {cfg.name!r} was planned with {plan_samples(plan)} sample(s) per image, "
            f"not {cfg.samples_per_image}; resume with the same number or choose another run name"
        )
    return plan


def decode_input(cfg: RunConfig) -> InputConfig:
    """How the decode tasks size images: ``input.short_side``, else sized for the run's consumers.

    Unset, the shorter side becomes the largest input side of the models that see the decoded
    image (the generator; a judge or re-answerer with its own model), so rows carry no pixels an
    image processor would discard; a run that scores CLIP crops, or a model whose side cannot be
    read, keeps ``max_side`` alone.
    """
    if cfg.input.short_side is not None or cfg.filters.clip.enabled:
        return cfg.input
    sides = [input_side(m) for m in sorted(cfg.engines.models(cfg.filters.enabled()))]
    if None in sides:
        return cfg.input
    return cfg.input.model_copy(update={"short_side": max(sides)})


def read_plan(shard: int, *, chunk: int, run_url: str, storage_options: dict):
    """A read task's rows: the plan rows of ``shard``, in lists of ``chunk``."""
    store = RunStore(run_url, storage_options)
    rows = store.read_frame(store.plan_name(shard)).to_dicts()
    for start in range(0, len(rows), chunk):
        yield rows[start : start + chunk]


def read_pool(cfg: RunConfig) -> Pool:
    """The run's read tasks: each reads a shard of the plan and decodes its images."""
    decode = cfg.pools.decode
    return Pool("tasks", decode.batch_size, task_cpus=decode.cpus, max_tasks=decode_tasks(decode, cfg.ray))


# --8<-- [start:generation_stages]
def generation_stages(cfg: RunConfig, decode: InputConfig, *, index: str | None = None, store: RunStore | None = None) -> list[StageSpec]:
    """A generation run's stages, in order: decode (and, with the evaluation ``index`` on the run's
    ``store``, contamination) on the read tasks; prompt, generate and parse on the
    generator's actors; the filters where :func:`filter_specs` places them."""
    tasks = read_pool(cfg)
    pool = cfg.pools.generator
    gen = Pool("generator", pool.batch_size, actors=pool, concurrent_calls=cfg.engines.generator.concurrent_batches(pool.batch_size, cfg.samples_per_image))
    engines, on_generator = cfg.engines.for_filters(cfg.filters.enabled())
    at = (store.url, index, store.storage_options) if index else None
    return [
        *([StageSpec("image_dedup", DuplicateImageStage, (store.url, store.storage_options), tasks)] if cfg.image_dedup.enabled else []),
        StageSpec("decode", DecodeStage, (decode,), tasks),
        *([StageSpec("contamination", ContaminationStage, (*at, cfg.decontamination), tasks)] if at else []),
        StageSpec("prompt", PromptStage, (cfg,), gen),
        StageSpec("generate", GenerateStage, (cfg,), gen),
        StageSpec("parse", ParseStage, (), gen),
        *([StageSpec("question_contamination", QuestionStage, at, gen)] if at else []),
        *filter_specs(cfg.filters, engines, cfg.pools.filters, generator=gen, on_generator=on_generator),
    ]
# --8<-- [end:generation_stages]


def _generate(store: RunStore, cfg: RunConfig, plan: dict, expected: dict[int, int]) -> float:
    """Generate the ``expected`` shards (image dedup and the evaluation index prepared first); the
    wall seconds it took."""
    pools = cfg.pools
    ensure_ray_data(cfg.ray, pools.generator.reserved_cpus + pools.filters.reserved_cpus)
    decode = decode_input(cfg)
    if cfg.image_dedup.enabled:
        m = cluster_images(store.url, store.storage_options, cfg.image_dedup, plan, decode, read_pool(cfg))
        log.info(f"[dedup] {m['duplicates']} of {plan['rows']} images are near-duplicates of others ({m['clusters']} clusters): "
                 "generated once, the others skipped")
    decide = functools.partial(decide_shard, cfg=cfg.filters, image_dedup=cfg.image_dedup.enabled)
    writer = ShardWriter(store, expected, decide, engine_stats=True)
    sized = f"shorter side at most {decode.short_side} px, " if decode.short_side else ""
    log.info(
        f"[generate] {sum(expected.values())} rows in {len(expected)} shards: starting {pools.generator.min_actors}-{pools.generator.max_actors} "
        f"{cfg.engines.generator.backend} generator actor(s) with {cfg.engines.generator.model}; "
        f"images decoded to a {sized}longer side at most {decode.max_side} px"
    )
    index = prepare_index(store, cfg.decontamination) if cfg.decontamination.enabled else None
    source = Source(sorted(expected), read_plan, {"run_url": store.url, "storage_options": store.storage_options}, ROW_COLUMNS, read_pool(cfg))
    t = time.monotonic()
    stream_into(build_dataset(source, generation_stages(cfg, decode, index=index, store=store)), writer, f"run {cfg.name!r}")
    return time.monotonic() - t


def run_generation(cfg: RunConfig) -> RunSummary:
    """Run (or resume) a generation run and return its summary.

    Args:
        cfg: the validated run configuration.

    Raises:
        ConfigError: the input cannot be planned (duplicate ids, missing folder, changed input).
        StorageError: the output store is not writable.
        RuntimeError: the generator failed beyond its retries.
    """
    started = datetime.now(UTC)
    use_system_arrow_allocator()
    store = RunStore(run_url(cfg), cfg.output.storage_options)
    store.check_writable()
    plan = _ensure_plan(store, cfg)
    store.write_config(redacted(cfg))  # a later filter pass reads the run's generator from it
    done = store.committed()
    n = plan_samples(plan)
    expected = {k: rows * n for k, rows in enumerate(plan["rows_per_shard"]) if k not in done}
    each = f", {n} samples each" if n > 1 else ""
    log.info("[plan] %d images%s in %d shards; %d already committed", plan["rows"], each, plan["shards"], len(done))
    before = store.read_json("manifest.json") or {}
    seconds = _generate(store, cfg, plan, expected) if expected else 0.0
    summary, generated = RunSummary(output=store.url, shards=plan["shards"], skipped_shards=len(done)), 0
    for m in store.markers():
        summary.add_marker(m)
        generated += sum(c.get("generated", 0) for c in m["funnel"].values()) if m["shard"] in expected else 0
    # Wall seconds per row the generator gave text for, this time; a run resumed with nothing left keeps its measure.
    rate = seconds / generated if generated else before.get("generator_seconds_per_row")
    extra = {"generator_seconds_per_row": round(rate, 4)} if rate else {}
    if cfg.image_dedup.enabled:
        extra["image_dedup"] = saved(store.read_json(IMAGE_DEDUP_MARKER), rate, n)
    write_manifest(
        store, summary, started, run=cfg.name, config=redacted(cfg), **extra,
        plan={"images": plan["rows"], "samples_per_image": n, "rows": plan["rows"] * n, "shards": plan["shards"]},
    )
    if expected or store.read_json("diversity.json") is None:  # a finished run started again keeps its figures
        off_driver(write_diversity, store.url, store.storage_options)
    if expected or not store.fs.exists(store.path(FINGERPRINT_TABLE)):
        off_driver(write_fingerprint_table, store.url, store.storage_options)
    return summary
