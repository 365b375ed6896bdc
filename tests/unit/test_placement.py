"""Where each filter runs (decided once), and the stage contract checked after every stage; no Ray."""

import pytest

from genixer_ray.config import FiltersConfig, build_config
from genixer_ray.filters.base import ScoringStage
from genixer_ray.stages import StageContractError, run_stages
from genixer_ray.stages.filters import filter_pool, placement


def placed(cfg) -> dict[str, str]:
    """Where a run config's filters run."""
    return placement(cfg.filters, cfg.engines.for_filters(cfg.filters.enabled())[1])


def calls(cfg, *, filter_pass: bool = False) -> int:
    """The calls at once of a run config's filter actors (as a pass places them, with ``filter_pass``)."""
    engines, on_generator = cfg.engines.for_filters(cfg.filters.enabled())
    where = placement(cfg.filters, set() if filter_pass else on_generator)
    return filter_pool(cfg.filters, cfg.pools.filters, engines, where).concurrent_calls


def test_placement_is_decided_once_for_runs_and_passes():
    on = ["filters.consistency.enabled=true", "filters.judge.enabled=true", "filters.clip.enabled=true"]
    both = build_config(None, [*on, "engines.judge.model=tiny"])
    assert placed(both) == {"consistency": "generator", "judge": "filter_actor", "clip": "filter_actor"}
    assert set(placement(both.filters, set()).values()) == {"filter_actor"}  # a pass: no generator actor there
    assert list(placed(both)) == ["consistency", "judge", "clip"]  # the order they run in
    on_generator = build_config(None, ["filters.judge.enabled=true"])
    assert placed(on_generator) == {"judge": "generator"}  # no filter actor in that run
    assert on_generator.filters.any_enabled and not FiltersConfig().any_enabled
    # An engine of its own, even the generator's model with other settings, is built on the filter actors.
    assert placed(build_config(None, [*on[:1], "engines.reanswerer.max_num_seqs=8"]))["consistency"] == "filter_actor"


class Dropping:
    def __call__(self, rows):
        return rows[1:]


class Reordering:
    def __call__(self, rows):
        return rows[::-1]


def test_a_stage_that_drops_or_reorders_rows_is_named():
    rows = [{"image_id": "a"}, {"image_id": "b"}]
    assert run_stages([lambda r: [dict(x, seen=True) for x in r]], rows)[1] == {"image_id": "b", "seen": True}
    with pytest.raises(StageContractError, match=r"Dropping returned 1 rows for 2 \(lost \['a'\]\)"):
        run_stages([Dropping()], rows)
    with pytest.raises(StageContractError, match="Reordering returned 2 rows for 2 \\(reordered"):
        run_stages([Reordering()], rows)


class Miscounting(ScoringStage):
    name = "miscounting"

    def score(self, rows):
        return [{"clip_score": 0.5} for _ in rows[1:]]


class Halving(ScoringStage):
    name = "halving"

    def score(self, rows):
        return [{"clip_score": 0.5, "image_id": "renamed"} if r["image_id"] == "b" else {"clip_score": 0.5} for r in rows]


def test_the_scoring_base_owns_the_loop_and_checks_the_count():
    rows = [{"image_id": "a", "status": "ok"}, {"image_id": "e", "status": "error"}, {"image_id": "b", "status": "ok"}]
    with pytest.raises(StageContractError, match="miscounting returned 1 results for 2 rows"):
        Miscounting()(rows)
    out = Halving()(rows[:2])  # only ok rows are scored; the others pass through
    assert out == [{"image_id": "a", "status": "ok", "clip_score": 0.5}, rows[1]]
    with pytest.raises(StageContractError, match=r"Halving returned 3 rows for 3 \(lost \['b'\]\)"):  # no renaming a row
        run_stages([Halving()], rows)


def test_pools_and_training_ask_for_the_accelerators_and_resources_configured():
    from genixer_ray.builder import pool_args
    from genixer_ray.config import ConfigError, TrainConfig, build_config

    cfg = build_config(None, ["pools.generator.gpus_per_actor=1", "pools.generator.accelerator_type=L4", "pools.generator.actor_resources={generator: 1}"])
    args = pool_args(cfg.pools.generator)
    assert args["num_gpus"] == 1 and args["accelerator_type"] == "L4" and args["resources"] == {"generator": 1.0}
    assert pool_args(cfg.pools.filters)["accelerator_type"] is None and pool_args(cfg.pools.filters)["num_gpus"] == 0
    with pytest.raises(ConfigError, match="pools.generator: .*accelerator_type \\(L4\\) needs gpus_per_actor > 0"):
        build_config(None, ["pools.generator.accelerator_type=L4"])
    train = build_config(None, ["scaling.use_gpu=true", "scaling.accelerator_type=A100", "scaling.resources_per_worker={trainer: 1}"], kind=TrainConfig)
    assert train.scaling.resources_per_worker == {"trainer": 1.0} and train.scaling.accelerator_type == "A100"
    with pytest.raises(ConfigError, match="needs use_gpu"):
        build_config(None, ["scaling.accelerator_type=A100"], kind=TrainConfig)


def test_a_vllm_actor_runs_enough_batches_at_once_to_keep_its_engine_full():
    """vLLM: ceil(max_num_seqs / batch_size) + 1 calls per actor at once, each in its own thread,
    with the configured queue beyond them; transformers: one call at a time, as before."""
    from genixer_ray.builder import pool_args
    from genixer_ray.config import build_config

    cfg = build_config(None, ["engines.generator.backend=vllm", "engines.generator.max_num_seqs=64"])
    assert cfg.engines.generator.concurrent_batches(16) == 5
    compute = pool_args(cfg.pools.generator, concurrent_calls=5)["compute"]
    assert compute.max_concurrent_calls_per_actor == 5 and compute.enable_true_multi_threading
    assert compute.max_tasks_in_flight_per_actor == cfg.pools.generator.max_tasks_in_flight_per_actor + 4
    assert build_config(None, ["engines.generator.backend=vllm", "engines.generator.max_num_seqs=8"]).engines.generator.concurrent_batches(16) == 2
    hf = build_config(None, ["engines.generator.backend=transformers"])
    assert hf.engines.generator.concurrent_batches(16) == 1
    compute = pool_args(hf.pools.generator)["compute"]
    assert compute.max_concurrent_calls_per_actor is None and not compute.enable_true_multi_threading


def test_a_filter_actor_with_a_vllm_judge_keeps_its_engine_full_too():
    """Filter actors whose judge or re-answerer runs on vLLM take as many calls at once as fill
    max_num_seqs (a re-answerer asks k answers per row); CLIP alone, transformers, or filters on
    the generator's actors leave them at one call."""
    from genixer_ray.builder import pool_args
    from genixer_ray.config import build_config

    vllm = ["engines.generator.backend=vllm", "engines.generator.max_num_seqs=64", "pools.filters.batch_size=8"]
    cfg = build_config(None, [*vllm, "filters.judge.enabled=true", "engines.judge.model=tiny"])
    assert calls(cfg) == 64 // 8 + 1
    compute = pool_args(cfg.pools.filters, concurrent_calls=9)["compute"]
    assert compute.max_concurrent_calls_per_actor == 9 and compute.enable_true_multi_threading
    both = build_config(None, [*vllm, "filters.judge.enabled=true", "engines.judge.model=tiny", "filters.consistency.enabled=true",
                               "engines.reanswerer.model=tiny", "filters.consistency.samples=4"])
    assert calls(both) == 64 // (8 * 4) + 1
    # The judge on the generator's engine runs on the generator's actors: the filter actor holds CLIP only.
    on_generator = build_config(None, [*vllm, "filters.judge.enabled=true", "filters.clip.enabled=true"])
    assert calls(on_generator) == 1
    # A filter pass has no generator actor: the generator's engine is built on the filter actors.
    assert calls(on_generator, filter_pass=True) == 64 // 8 + 1
    hf = build_config(None, ["engines.generator.backend=transformers", "filters.judge.enabled=true", "engines.judge.model=tiny"])
    assert calls(hf) == 1
    assert calls(build_config(None, ["filters.clip.enabled=true"])) == 1


def test_decode_tasks_are_bounded_by_the_cores_of_a_local_instance(monkeypatch):
    import os

    from genixer_ray.config import DecodePoolConfig, RayConfig
    from genixer_ray.ray_start import decode_tasks

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local, cluster = RayConfig(), RayConfig(address="auto")
    assert decode_tasks(DecodePoolConfig(), local) == os.cpu_count()  # local: its logical CPUs are inflated, its cores are not
    assert decode_tasks(DecodePoolConfig(), cluster) is None  # a cluster: as many as its CPUs allow
    assert decode_tasks(DecodePoolConfig(tasks=64), cluster) == 64
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")  # inside `ray job submit`
    assert decode_tasks(DecodePoolConfig(), local) is None


def test_a_run_driver_hands_the_memory_arrow_frees_back(monkeypatch, tmp_path):
    """A run's driver puts Arrow on the system allocator before it plans (Arrow's mimalloc pool
    kept what it freed, and the driver grew with the run), unless the user chose a pool."""
    import pyarrow as pa

    from genixer_ray.config import ConfigError, FilterPassConfig, build_config, load_config
    from genixer_ray.errors import InputError
    from genixer_ray.filter_pass import run_filter
    from genixer_ray.pipeline import run_generation
    from genixer_ray.ray_start import use_system_arrow_allocator

    before = pa.default_memory_pool()
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    try:
        pa.set_memory_pool(pa.mimalloc_memory_pool())
        cfg = load_config(None, [f"input.source={tmp_path / 'missing'}", f"output.path={tmp_path / 'runs'}", "name=r"])
        with pytest.raises(InputError, match="input.source"):
            run_generation(cfg)  # stops at planning, after the driver's set-up
        assert pa.default_memory_pool().backend_name == "system"
        pa.set_memory_pool(pa.mimalloc_memory_pool())
        with pytest.raises(ConfigError, match="no generation run"):
            run_filter(str(tmp_path / "runs" / "r"), build_config(None, ["filters.clip.enabled=true"], kind=FilterPassConfig))
        assert pa.default_memory_pool().backend_name == "system"
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
        pa.set_memory_pool(pa.mimalloc_memory_pool())
        use_system_arrow_allocator()
        assert pa.default_memory_pool().backend_name == "mimalloc"
    finally:
        pa.set_memory_pool(before)
