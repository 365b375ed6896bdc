"""Stages: plain callables over a batch of rows, runnable and testable without Ray, and their specs.

A batch is a list of row dicts. Each stage returns exactly one row per input row, in order,
keeping ``shard``, ``image_id`` and ``sample``; a stage whose ``fan_out`` attribute is > 1 (the prompt stage,
when a run asks for several samples per image) turns each row into that many rows (samples 0, 1, ...), in
order. :func:`check_contract` checks this after every stage call, in one place. A row that fails
gets ``status = "error"`` with a code and the stage's name (:func:`fail`) and passes through later
stages untouched. Images travel between stages as raw RGB bytes plus height and width (Ray can
size bytes; it cannot size PIL objects). Outcomes are counted from the rows themselves (by status
and error code) where shards are committed, since a stage's own counters would stay in whichever
Ray worker ran it.

A :class:`StageSpec` says what a stage is (its class or factory and the configs it is built from)
and where it runs (a :class:`Pool`: the read tasks, or an actor pool with its size, resources,
batch size and calls at once). A generation run and a filter pass are each a list of specs handed
to :func:`genixer_ray.builder.build_dataset`, the one place that wires stages into Ray Data. One
module per stage: :mod:`.image_dedup`, :mod:`.decode`, :mod:`.prompt`, :mod:`.generate`, :mod:`.parse`,
:mod:`.filters` (CLIP, the judge, self-consistency).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from genixer_ray.errors import StageContractError, fail
from genixer_ray.schema import row_key
from genixer_ray.seeding import sample_id

__all__ = [
    "IMAGE_COLUMNS", "Pool", "StageContractError", "StageSpec", "build_stages", "check_contract", "drop_image", "fail", "row_image",
    "run_stages",
]


@dataclass(frozen=True)
class Pool:
    """Where stages run: Ray Data's read tasks (``actors`` unset), or one autoscaling actor pool.

    Args:
        name: the pool's name (``tasks``, ``generator``, ``filters``); the builder names each
            actor pool's Ray Data operator after it.
        batch_size: rows per call of the pool's stages.
        actors: the pool's options (:class:`~genixer_ray.config.ActorPoolConfig`: actors, CPUs,
            GPUs, resources); unset for the read tasks, which run where the source is read.
        concurrent_calls: calls one actor runs at once, in threads (a vLLM engine takes every
            thread's requests); 1 for engines that run one batch at a time.
        task_cpus: CPUs per read task (the read tasks only).
        max_tasks: read tasks running at once; ``None``: as Ray Data schedules (the read tasks only).
    """

    name: str
    batch_size: int
    actors: Any = None
    concurrent_calls: int = 1
    task_cpus: float = 1.0
    max_tasks: int | None = None

    @property
    def is_tasks(self) -> bool:
        """Whether these are the read tasks rather than an actor pool."""
        return self.actors is None


@dataclass(frozen=True)
class StageSpec:
    """One stage of a run or pass: what it is built from and where it runs.

    Args:
        name: the stage's name (as written in ``error_stage``).
        build: the stage's class, or a module-level function returning the stage; called once per
            Ray worker as ``build(*args)`` (configs travel, models are built where they run).
        args: what ``build`` takes: configs, picklable.
        pool: where it runs.
    """

    name: str
    build: Callable[..., Callable[[list[dict]], list[dict]]]
    args: tuple = ()
    pool: Pool | None = None


def build_stages(specs: list[StageSpec]) -> list[Callable[[list[dict]], list[dict]]]:
    """The stages of ``specs``, built in this process (engines are built once per process)."""
    return [spec.build(*spec.args) for spec in specs]


def run_stages(stages: list, rows: list[dict]) -> list[dict]:
    """Run ``stages`` in turn over ``rows``, checking each keeps the contract (:func:`check_contract`)."""
    for stage in stages:
        out = stage(rows)
        check_contract(stage, rows, out)
        rows = out
    return rows


def check_contract(stage, rows_in: list[dict], rows_out: list[dict]) -> None:
    """Raise :class:`StageContractError` unless ``rows_out`` holds one row per row of ``rows_in``, in order.

    A stage with a ``fan_out`` attribute (the prompt stage: samples per image) must return that
    many rows per row in, samples 0, 1, ... in order. Every
    row must reach the writer, or its shard never commits; a stage that drops, adds, renames or
    reorders rows is a bug, and is named here rather than found as a shard left incomplete.
    """
    fan_out = getattr(stage, "fan_out", 1)
    keys_in = [row_key(r) for r in rows_in]
    want = [(i, k) for i, _ in keys_in for k in range(fan_out)] if fan_out > 1 else keys_in
    got = [row_key(r) if "image_id" in r else None for r in rows_out]
    if want != got:
        lost = sorted(set(want) - set(got))[:3]
        raise StageContractError(
            f"stage {type(stage).__name__} returned {len(got)} rows for {len(want)}"
            + (f" (lost {[sample_id(*k) for k in lost]})" if lost else " (reordered or renamed)")
        )


def row_image(row: dict) -> np.ndarray:
    """The decoded RGB image of a row that passed the decode stage."""
    return np.frombuffer(row["pixels"], dtype=np.uint8).reshape(row["height"], row["width"], 3)


IMAGE_COLUMNS = ("pixels", "height", "width")


def drop_image(batch: list[dict]) -> list[dict]:
    """The rows without their decoded image (what is written: the source names the image)."""
    return [{k: v for k, v in r.items() if k not in IMAGE_COLUMNS} for r in batch]
