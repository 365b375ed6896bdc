"""Starting or joining Ray: shared by generation runs, filter passes and training."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from genixer_ray.config import RayConfig


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


def ensure_ray(address: str | None, reserved: float) -> None:
    """Join ``address`` (or a job's cluster), else start a local instance; no-op when Ray is up."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, **local_ray_cpus(address, reserved))


def ensure_ray_data(cfg: RayConfig, reserved: float) -> None:
    """:func:`ensure_ray` for a Ray Data run, whose actors (a large engine each) may take up to
    ``cfg.actor_start_timeout_s`` to start before Ray Data gives up on them."""
    import ray

    ensure_ray(cfg.ray_address, reserved)
    ray.data.DataContext.get_current().wait_for_min_actors_s = cfg.actor_start_timeout_s
