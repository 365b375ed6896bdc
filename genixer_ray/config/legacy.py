"""Configs written before the components layout (``generator``, ``scaling``, a filter pass's ``engine``,
pool options and models under ``filters``), translated to today's sections.

Every config file the previous release accepted, and every run's recorded ``run.json``, still
loads: :func:`translate` moves each old key to its section (``generator.model`` to
``engines.generator.model``, ``scaling.max_actors`` to ``pools.generator.max_actors``, ...) and
says which moved, and the loader prints that in one line.
"""

from __future__ import annotations

from typing import Any

from genixer_ray.config.base import copy_tree

_ENGINE = ("model", "backend", "dtype", "max_model_len", "gpu_memory_utilization", "cpu_kvcache_space_gib",
           "tensor_parallel_size", "max_num_seqs", "enforce_eager", "block_size")
_POOL = ("min_actors", "max_actors", "cpus_per_actor", "gpus_per_actor", "actor_resources", "accelerator_type",
         "max_tasks_in_flight_per_actor")
_RAY = {"ray_address": "ray.address", "actor_start_timeout_s": "ray.actor_start_timeout_s",
        "decode_cpus": "pools.decode.cpus", "decode_tasks": "pools.decode.tasks"}
_FILTER_MODELS = {"judge": "engines.judge", "consistency": "engines.reanswerer", "rating": "engines.rater"}

# Old key -> where it goes (several places: each gets the value).
_SHARED = {
    **{f"filters.{k}": (f"pools.filters.{k}",) for k in (*_POOL, "batch_size")},
    **{f"filters.{f}.model": (f"{e}.model",) for f, e in _FILTER_MODELS.items()},
    **{f"scaling.{k}": (v,) for k, v in _RAY.items()},
}
RUN_MOVES: dict[str, tuple[str, ...]] = {
    "filters.name": (),  # a pass's name, which a run never used
    **{f"generator.{k}": (f"engines.generator.{k}",) for k in _ENGINE},
    "generator.batch_size": ("pools.generator.batch_size",),
    **{f"scaling.{k}": (f"pools.generator.{k}",) for k in _POOL},
    "scaling.decode_batch_size": ("pools.decode.batch_size",),
    **_SHARED,
}
PASS_MOVES: dict[str, tuple[str, ...]] = {
    "filters.name": ("name",),
    # The pass's one engine setting was every filter engine's.
    **{f"engine.{k}": tuple(f"{e}.{k}" for e in _FILTER_MODELS.values()) for k in _ENGINE if k != "model"},
    **_SHARED,
}
_UNSET_IS_ABSENT = {f"filters.{f}.model" for f in _FILTER_MODELS}
TRAIN_MOVES: dict[str, tuple[str, ...]] = {"scaling.ray_address": ("ray.address",)}
# The old sections, and where their settings are now (said of a key left in them).
OLD_SECTIONS = {
    "generator": "engines.generator (the model and engine) and pools.generator.batch_size",
    "scaling": "pools.generator (the generator actors), pools.decode (decode tasks) and ray (the cluster)",
    "engine": "engines.judge, engines.reanswerer and engines.rater",
}


def _pop(data: dict, dotted: str) -> tuple[bool, Any]:
    *parents, leaf = dotted.split(".")
    node = data
    for p in parents:
        node = node.get(p)
        if not isinstance(node, dict):
            return False, None
    if leaf not in node:
        return False, None
    return True, node.pop(leaf)


def _put(data: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for p in parents:
        if node.get(p) is None:
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise ValueError(f"{dotted}: {p} is not a section")
    if leaf in node and node[leaf] != value:
        raise ValueError(f"{dotted} is given twice, in the old and the new layout, with different values")
    node[leaf] = value


def translate(data: dict[str, Any], moves: dict[str, tuple[str, ...]]) -> tuple[dict[str, Any], list[str]]:
    """``data`` with every old key of ``moves`` (:data:`RUN_MOVES` or :data:`PASS_MOVES`) moved to
    its section, and the moves as ``old -> new`` lines (none: the config was in today's layout).

    An old section left empty is removed; a key left in one is not known and fails validation.

    Raises:
        ValueError: a key given in both layouts with different values.
    """
    out, moved = copy_tree(data), {}
    for old, new in moves.items():
        found, value = _pop(out, old)
        if found and value is None and old in _UNSET_IS_ABSENT:
            continue  # a recorded run.json's "model": null is a filter on the generator's engine
        if found:
            for dest in new:
                _put(out, dest, copy_tree(value))
            # Said by section: "generator.{model, dtype} -> engines.generator".
            old_section, leaf = old.rsplit(".", 1)
            kept_name = all(d.endswith("." + leaf) for d in new)
            where = ", ".join(d.rsplit(".", 1)[0] if kept_name else d for d in new)
            moved.setdefault((old_section, where, kept_name), []).append(leaf)
    for section in (*OLD_SECTIONS, "filters"):
        if out.get(section) == {}:
            del out[section]
    said = []
    for (old_section, where, _), leaves in moved.items():
        names = leaves[0] if len(leaves) == 1 else "{" + ", ".join(leaves) + "}"
        said.append(f"{old_section}.{names} -> {where}" if where else f"{old_section}.{names} dropped (it never applied here)")
    return out, said
