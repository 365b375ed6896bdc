"""Configs by component: the bundled configs of the release before (kept in tests/fixtures) and a
recorded run.json of it still load, read as today's layout with one line saying what moved; a key
in the wrong place is an error naming where it goes; show-config prints today's layout."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from genixer_ray.config import ConfigError, EngineConfig, FilterPassConfig, RunConfig, TrainConfig, build_config, load_config
from genixer_ray.config.loading import config_kind

ROOT = Path(__file__).parents[2]
OLD = ROOT / "tests/fixtures/configs-before-components"


@pytest.fixture()
def demo_model(tmp_path, monkeypatch):
    """The folder configs/demo.yaml names (the trained demo generator), so that it validates anywhere."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs/train/genixer-tiny/model").mkdir(parents=True)
    return tmp_path


@pytest.mark.parametrize("name, kind", [("demo.yaml", RunConfig), ("filter.yaml", FilterPassConfig), ("train.yaml", TrainConfig)])
def test_each_old_bundled_config_reads_as_the_new_one(demo_model, caplog, name, kind):
    assert config_kind(OLD / name) is kind and config_kind(ROOT / "configs" / name) is kind
    with caplog.at_level(logging.WARNING, logger="genixer_ray.config"):
        new = load_config(ROOT / "configs" / name, kind=kind)
        assert not caplog.records  # today's file: nothing moved
        old = load_config(OLD / name, kind=kind)
    assert old == new
    if name == "demo.yaml":  # one line, saying which keys went where
        (said,) = [r.getMessage() for r in caplog.records]
        assert "generator.{model, backend, dtype, max_model_len, max_num_seqs} -> engines.generator" in said
        assert "generator.batch_size -> pools.generator" in said


def test_the_old_gpu_filter_pass_builds_the_same_engines_and_pools():
    old, new = (load_config(d / "filter-gpu.yaml", kind=FilterPassConfig) for d in (OLD, ROOT / "configs"))
    assert old.filters == new.filters and old.pools == new.pools
    run_generator = EngineConfig(model="org/generator", dtype="float16")
    assert old.engines_for(lambda: run_generator, "r") == new.engines_for(lambda: run_generator, "r")
    judge = new.engines_for(lambda: run_generator, "r")["judge"]
    assert judge.model == "llava-hf/llava-1.5-13b-hf" and judge.dtype == "bfloat16" and new.pools.filters.gpus_per_actor == 1


def test_a_recorded_run_json_of_the_release_before_loads(tmp_path, caplog):
    """A run started by the release before: its recorded config reads as today's, and a filter pass
    over it finds the run's generator in it."""
    from genixer_ray.filter_pass import recorded_generator
    from genixer_ray.store import RunStore

    recorded = json.loads((OLD / "run.json").read_text())
    with caplog.at_level(logging.WARNING, logger="genixer_ray.config"):
        cfg = build_config(recorded, source="run.json")
    assert "scaling.{min_actors, max_actors" in caplog.text and "filters.judge.model -> engines.judge" in caplog.text
    assert "filters.name dropped" in caplog.text
    assert cfg.engines.generator == EngineConfig(model="tiny", backend="transformers", dtype="float32")
    assert cfg.pools.generator.batch_size == 4 and cfg.pools.generator.max_actors == 2 and cfg.pools.decode.tasks == 2
    assert cfg.pools.filters.batch_size == 8 and cfg.engines.reanswerer is None  # a recorded `model: null`: the generator's own
    assert cfg.engines.judge == cfg.engines.generator  # the judge named the generator's model: its settings, on its own engine
    store = RunStore(str(tmp_path / "run"))
    store.write_config(recorded)
    assert recorded_generator(store) == cfg.engines.generator


def test_a_key_in_the_wrong_place_names_where_it_goes():
    with pytest.raises(ConfigError) as e:
        build_config(None, ["pools.generator.model=x", "engines.generator.min_actors=2", "scaling.foo=1"])
    said = str(e.value)
    assert "pools.generator.model: Extra inputs are not permitted (model belongs under engines.generator or" in said
    assert "engines.generator.min_actors: Extra inputs are not permitted (min_actors belongs under pools.filters or pools.generator)" in said
    assert "scaling: Extra inputs are not permitted (an old section: its settings are now under pools.generator" in said
    # The same key given in both layouts with two values: which one was meant is not guessed.
    with pytest.raises(ConfigError, match="engines.generator.backend is given twice"):
        build_config({"engines": {"generator": {"backend": "vllm"}}}, ["generator.backend=transformers"])
    assert build_config({"engines": {"generator": {"backend": "vllm"}}}, ["generator.backend=vllm"]).engines.generator.backend == "vllm"
    # A pass's name is the pass config's own; a run never used one (its recorded run.json held it).
    assert build_config({"filters": {"name": "strict"}}, kind=FilterPassConfig).name == "strict"
    assert build_config({"filters": {"name": "strict"}}) == RunConfig()
    with pytest.raises(ConfigError, match="a filter pass generates nothing"):
        build_config({"engines": {"generator": {"model": "tiny"}}}, kind=FilterPassConfig)


def test_show_config_prints_an_old_file_in_todays_layout(demo_model, capsys, caplog):
    from genixer_ray.cli import main

    shutil.copy(OLD / "filter-gpu.yaml", demo_model / "old.yaml")
    with caplog.at_level(logging.WARNING, logger="genixer_ray.config"):
        assert main(["show-config", str(demo_model / "old.yaml")]) == 0
    out = capsys.readouterr()
    printed = yaml.safe_load(out.out)
    assert "filter pass configuration" in out.err and "engine.{backend, dtype" in caplog.text
    assert printed["engines"]["judge"]["model"] == "llava-hf/llava-1.5-13b-hf" and printed["pools"]["filters"]["max_actors"] == 8
    assert "engine" not in printed and "min_actors" not in printed["filters"]
    assert load_config(str(demo_model / "old.yaml"), kind=FilterPassConfig) == build_config(printed, kind=FilterPassConfig)
