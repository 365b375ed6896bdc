"""A filter pass: score and decide the committed shards of an existing run, resumably.

Every committed shard of a run is read again (its images decoded anew), scored by the filter
actors and written whole to ``{run}/filtered/{name}`` with its decisions and reasons.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime

from pydantic import ValidationError

from genixer_ray.builder import Source, build_dataset
from genixer_ray.config import ConfigError, EngineConfig, FilterPassConfig, InputConfig, redacted
from genixer_ray.config.legacy import RUN_MOVES, translate
from genixer_ray.decontam.index import prepare_index
from genixer_ray.diversity import write_diversity
from genixer_ray.errors import fail
from genixer_ray.filters.decide import decide_shard
from genixer_ray.fingerprints import FINGERPRINT_COLUMNS
from genixer_ray.ray_start import decode_tasks, ensure_ray_data, off_driver, use_system_arrow_allocator
from genixer_ray.schema import FILTER_SCHEMA, GENERATION_SCHEMA
from genixer_ray.stages import IMAGE_COLUMNS, Pool, StageSpec
from genixer_ray.stages.contamination import ContaminationStage, QuestionStage
from genixer_ray.stages.decode import DecodeStage
from genixer_ray.stages.filters import filter_specs
from genixer_ray.store import RunStore
from genixer_ray.summary import RunSummary, write_manifest
from genixer_ray.writer import ShardWriter, stream_into

log = logging.getLogger(__name__)


def filter_url(run: str, cfg: FilterPassConfig) -> str:
    """Where a filter pass over ``run`` writes: ``{run}/filtered/{name}``."""
    return f"{run.rstrip('/')}/filtered/{cfg.name}"


def read_committed(shard: int, *, chunk: int, run_url: str, storage_options: dict, decode: InputConfig):
    """A read task's rows: a run's committed ``shard``, its images decoded again, in lists of ``chunk``.

    Earlier filter columns are cleared (this pass scores anew). An ``ok`` row whose image can no
    longer be read becomes an error row with the decode code; its generated text is kept.
    """
    src = RunStore(run_url, storage_options)
    stage = DecodeStage(decode)
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
                    img = stage([{"shard": shard, "image_id": p["image_id"], "source": p["source"], "data": p["data"]}])[0]
                if img["status"] == "ok":  # its image, and its fingerprints (runs made before them had none)
                    row |= {c: img[c] for c in (*IMAGE_COLUMNS, *FINGERPRINT_COLUMNS)}
                else:
                    row = fail(row, img["error_stage"], img["error_code"], img["error_message"])
            out.append(row)
        yield out


def recorded_generator(src: RunStore) -> EngineConfig | None:
    """The generator the run at ``src`` was last started with, or ``None`` if it records none.

    Raises:
        ConfigError: the recorded generator is not usable here (say, its model directory is gone).
    """
    config = src.config()
    if config is None:
        return None
    recorded = translate(config, RUN_MOVES)[0].get("engines", {}).get("generator")  # a run.json of any release
    if recorded is None:
        return None
    try:
        return EngineConfig.model_validate(recorded)
    except ValidationError as e:
        raise ConfigError(
            f"the generator recorded by the run at {src.url} cannot be used here ({e.errors()[0]['msg']}); "
            "name the judge's, re-answerer's and rater's model (engines.judge.model, engines.reanswerer.model, engines.rater.model)"
        ) from None


def _begin(dst: RunStore, cfg: FilterPassConfig, engines: dict[str, dict], run: str) -> None:
    """Record the pass's settings (``engines``: each filter's engine, redacted) at its first start;
    refuse to resume it with others."""
    wanted = {"filters": redacted(cfg.filters), "engines": engines}
    if cfg.decontamination.enabled:
        wanted["decontamination"] = redacted(cfg.decontamination)
    recorded = dst.read_json("filter.json")
    if recorded is None:
        dst.write_json("filter.json", wanted)
    elif recorded != wanted:
        raise ConfigError(
            f"filter pass {cfg.name!r} of {run} was begun with other settings ({recorded}); "
            "resume with the same settings or choose another name"
        )


def pass_checks(dst: RunStore, cfg: FilterPassConfig, tasks: Pool) -> list[StageSpec]:
    """The decontamination stages of a pass (none unless enabled), on the read tasks: the images,
    decoded again, and the generated questions, matched against the evaluation index on ``dst``."""
    if not cfg.decontamination.enabled:
        return []
    at = (dst.url, prepare_index(dst, cfg.decontamination), dst.storage_options)
    return [
        StageSpec("contamination", ContaminationStage, (*at, cfg.decontamination, False), tasks),
        StageSpec("question_contamination", QuestionStage, at, tasks),
    ]


def run_filter(run: str, cfg: FilterPassConfig) -> RunSummary:
    """Filter the committed shards of an existing run (or resume doing so); return the summary.

    Every committed shard of ``run`` becomes a shard of ``{run}/filtered/{name}`` with all
    its rows, their filter scores, decisions and reasons. Shards committed there are skipped, so
    a re-run resumes; shards the run commits later are picked up by the next filter pass.

    Args:
        run: the generation run's folder URL (``{output.path}/{name}``).
        cfg: the pass's filters and their engines; a judge or re-answerer without a model uses the
            run's generator, and images are decoded as the run decoded them unless ``images`` says.

    Raises:
        ConfigError: no run at ``run``, no filter enabled, no model for a filter, or the pass was
            begun with other settings.
        RuntimeError: a filter engine failed beyond its retries.
    """
    if not cfg.filters.any_enabled and not cfg.decontamination.enabled:
        raise ConfigError(
            "filters: no filter is enabled (set filters.clip.enabled, filters.judge.enabled, filters.consistency.enabled "
            "or decontamination.enabled)"
        )
    started = datetime.now(UTC)
    use_system_arrow_allocator()
    src = RunStore(run, cfg.run.storage_options)
    plan = src.plan()
    if plan is None:
        raise ConfigError(f"no generation run at {run} (it has no complete plan)")
    engines = cfg.engines_for(lambda: recorded_generator(src), src.url)
    decode = cfg.decode_config(plan.get("input") or {})
    dst = RunStore(filter_url(src.url, cfg), cfg.run.storage_options)
    dst.check_writable()
    recorded_engines = {n: redacted(e) for n, e in engines.items()}
    _begin(dst, cfg, recorded_engines, src.url)
    source = {m["shard"]: m["rows"] for m in src.markers()}
    done = dst.committed()
    expected = {k: n for k, n in source.items() if k not in done}
    log.info(f"[filter] {len(source)} of {plan['shards']} shards of {src.url} committed; {len(done)} already filtered")
    if expected:
        f, pools = cfg.filters, cfg.pools
        ensure_ray_data(cfg.ray, pools.filters.reserved_cpus)
        tasks = Pool("tasks", pools.decode.batch_size, task_cpus=pools.decode.cpus, max_tasks=decode_tasks(pools.decode, cfg.ray))
        load = {"run_url": src.url, "storage_options": cfg.run.storage_options, "decode": decode}
        writer = ShardWriter(dst, expected, functools.partial(decide_shard, cfg=f), label="filter")
        specs = pass_checks(dst, cfg, tasks) + filter_specs(f, engines, pools.filters)
        stream_into(build_dataset(Source(sorted(expected), read_committed, load, GENERATION_SCHEMA, tasks), specs), writer, f"filter pass {cfg.name!r} of {src.url}")
    summary = RunSummary(output=dst.url, shards=len(source), skipped_shards=len(done))
    for m in dst.markers():
        summary.add_marker(m)
    write_manifest(
        dst, summary, started, source_run=src.url, filters=redacted(cfg.filters), engines=recorded_engines, publish=redacted(cfg.publish),
        views=cfg.views,
        source_shards={"planned": plan["shards"], "committed": len(source)},
    )
    if expected or dst.read_json("diversity.json") is None:  # a finished pass started again keeps its figures
        off_driver(write_diversity, dst.url, dst.storage_options)
    return summary
