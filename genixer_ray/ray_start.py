"""Starting or joining Ray, and a run driver's process set-up: shared by generation runs, filter passes and training."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from genixer_ray.config import DecodePoolConfig, RayConfig


def joins_cluster(address: str | None) -> bool:
    """Whether Ray is a cluster to join (``address``, or a job's ``RAY_ADDRESS``), not a local instance."""
    return address is not None or bool(os.environ.get("RAY_ADDRESS"))


def decode_tasks(decode: DecodePoolConfig, cluster: RayConfig) -> int | None:
    """How many decode tasks run at once: ``decode.tasks``, else the machine's cores on a local
    instance (whose logical CPUs :func:`local_ray_cpus` inflates), else no limit."""
    if decode.tasks is not None:
        return decode.tasks
    return None if joins_cluster(cluster.address) else os.cpu_count() or 1


def local_ray_cpus(address: str | None, reserved: float) -> dict:
    """``ray.init`` arguments for a local instance that can schedule the whole job.

    Workers or actors that hold CPUs for the whole run (``reserved``) would leave nothing for
    Ray Data's read and decode tasks on a 2-core machine, and the job would wait forever; a local
    instance therefore advertises a few more logical CPUs than are reserved. A cluster
    (``address`` set) advertises its own.
    """
    if joins_cluster(address):
        return {}
    return {"num_cpus": max(os.cpu_count() or 1, int(reserved) + 4)}


def ensure_ray(address: str | None, reserved: float) -> None:
    """Join ``address`` (or a job's cluster), else start a local instance; no-op when Ray is up."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, **local_ray_cpus(address, reserved))


def ensure_ray_data(cfg: RayConfig, reserved: float) -> None:
    """:func:`ensure_ray` for a Ray Data run, which stops after ``cfg.actor_start_timeout_s`` without
    progress (an actor that cannot start, or a large engine that starts slower than that).

    Actors start while the decode tasks run: told to wait for its actors, Ray Data held every
    decode task back until the engines were up (BENCHMARKS.md, the pipeline).
    """
    import ray

    ensure_ray(cfg.address, reserved)
    ray.data.DataContext.get_current().execution_no_progress_timeout_s = cfg.actor_start_timeout_s


def use_system_arrow_allocator() -> None:
    """Send this process's Arrow allocations to the system allocator, unless
    ``ARROW_DEFAULT_MEMORY_POOL`` chooses one.

    A run's driver streams the whole run through Arrow (the manifest it plans from, every output
    batch). Arrow's default pool here, mimalloc, kept much of what it freed: the driver's private
    memory grew with the run's size (BENCHMARKS.md, scale). The system allocator hands it back.
    """
    import pyarrow as pa

    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        pa.set_memory_pool(pa.system_memory_pool())


def off_driver(fn, *args):
    """``fn(*args)`` in one Ray task when Ray is up (the driver's memory stays flat in the size of
    the run), else here; returns its result."""
    import ray

    if not ray.is_initialized():
        return fn(*args)
    return ray.get(ray.remote(num_cpus=1)(fn).remote(*args))
