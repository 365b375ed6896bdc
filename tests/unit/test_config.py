import pytest

from genixer_ray.config import ConfigError, RunConfig, build_config, load_config
from genixer_ray.filters.rules import judge_rule


def write(tmp_path, text):
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


def test_defaults_are_the_embedded_demo():
    cfg = load_config(None)
    assert isinstance(cfg, RunConfig)
    assert cfg.input.source == "embedded" and cfg.engines.generator.model == "tiny"


def test_yaml_and_overrides(tmp_path):
    p = write(tmp_path, "name: r1\nsampling:\n  temperature: 0.5\nengines:\n  generator:\n    backend: transformers\n")
    cfg = load_config(p, ["sampling.temperature=0.2", "input.limit=3", "engines.generator.model=org/model"])
    assert cfg.name == "r1"
    assert cfg.sampling.temperature == 0.2
    assert cfg.input.limit == 3
    assert cfg.engines.generator.backend == "transformers" and cfg.engines.generator.model == "org/model"


@pytest.mark.parametrize(
    "text, field, value",
    [
        ("generator:\n  backend: vlm\n", "engines.generator.backend", "'vlm'"),
        ("sampling:\n  temperature: -1\n", "sampling.temperature", "-1"),
        ("sampling:\n  top_p: 0\n", "sampling.top_p", "0"),
        ("sampling:\n  temprature: 0.3\n", "sampling.temprature", "0.3"),
        ("name: '../escape'\n", "name", "'../escape'"),
        ("generator:\n  max_model_len: lots\n", "engines.generator.max_model_len", "'lots'"),
        ("filters:\n  clip:\n    task_thresholds: {recc: 0.3}\n", "filters.clip.task_thresholds", "{'recc': 0.3}"),
        ("filters:\n  judge:\n    band: [0.8, 0.2]\n", "filters.judge.band", "[0.8, 0.2]"),
        ("filters:\n  judge:\n    prompt: Is it true?\n", "filters.judge.prompt", "'Is it true?'"),
        ("filters:\n  judge:\n    policy: best\n", "filters.judge.policy", "'best'"),
        ("filters:\n  consistency:\n    samples: 0\n", "filters.consistency.samples", "0"),
        ("filters:\n  judge:\n    model: ./no/such/dir\n", "engines.judge.model", "'./no/such/dir'"),
    ],
)
def test_bad_value_names_field_and_value(tmp_path, text, field, value):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert f"{field}:" in str(e.value)
    assert f"(got {value})" in str(e.value)


def test_cross_field_check_names_both_fields():
    with pytest.raises(ConfigError, match=r"sampling.max_tokens \(600\).*engines.generator.max_model_len \(512\)"):
        build_config({"generator": {"max_model_len": 512}, "sampling": {"max_tokens": 600}})


def test_bad_override_and_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(None, ["sampling.temperature"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_memory_utilization_platform_default():
    g = load_config(None).engines.generator
    assert g.memory_utilization(cpu=True) == 0.2 and g.memory_utilization(cpu=False) == 0.9
    g = load_config(None, ["engines.generator.gpu_memory_utilization=0.5"]).engines.generator
    assert g.memory_utilization(cpu=True) == 0.5


def test_engine_and_scaling_checks(tmp_path):
    with pytest.raises(ConfigError, match=r"engines.generator.model: no model directory"):
        build_config({"engines": {"generator": {"model": str(tmp_path / "none")}}})
    assert build_config({"engines": {"generator": {"model": str(tmp_path)}}}).engines.generator.model == str(tmp_path)
    with pytest.raises(ConfigError, match="pools.generator.gpus_per_actor"):
        build_config({"engines": {"generator": {"tensor_parallel_size": 2}}, "pools": {"generator": {"gpus_per_actor": 1}}})
    with pytest.raises(ConfigError, match=r"pools.generator: min_actors \(3\) exceeds max_actors"):
        build_config({"pools": {"generator": {"min_actors": 3, "max_actors": 2}}})
    with pytest.raises(ConfigError, match="task_mix: unknown task"):
        build_config({"task_mix": {"captioning": 1.0}})


def test_training_combinations_checked_before_work():
    from genixer_ray.config import TrainConfig

    with pytest.raises(ConfigError, match="model.lora with scaling.strategy=fsdp"):
        load_config(None, ["model.lora={r: 4}", "scaling.strategy=fsdp"], kind=TrainConfig)
    with pytest.raises(ConfigError, match=r"scaling.strategy: .*'ddp' or 'fsdp'"):
        load_config(None, ["scaling.strategy=zero3"], kind=TrainConfig)


def test_filter_pass_configs_validate():
    from pathlib import Path

    from genixer_ray.config import FilterPassConfig

    configs = Path(__file__).parents[2] / "configs"
    cfg = load_config(configs / "filter-gpu.yaml", kind=FilterPassConfig)
    f = cfg.filters
    assert f.clip.enabled and f.judge.enabled and f.consistency.enabled and cfg.pools.filters.gpus_per_actor == 1
    assert cfg.engines.judge.model == "llava-hf/llava-1.5-13b-hf" and cfg.engines.reanswerer.model is None
    assert judge_rule(f.judge).text == "band[0.5,0.7]" and f.clip.threshold_for("rec") == 0.22 and cfg.engines.judge.dtype == "bfloat16"
    local = load_config(configs / "filter.yaml", kind=FilterPassConfig)
    assert local.engines == type(local.engines)()


def test_filter_pass_engines_come_from_the_run_unless_named():
    from genixer_ray.config import EngineConfig, FilterPassConfig, build_config

    run_gen = EngineConfig(model="tiny", backend="transformers", max_model_len=512)
    both = ["filters.judge.enabled=true", "filters.consistency.enabled=true"]
    # Nothing named: the run's generator, as it was built.
    assert build_config(None, both, kind=FilterPassConfig).engines_for(lambda: run_gen, "r") == {"judge": run_gen, "consistency": run_gen}
    # Engine settings given: the run's generator with them (the fields not given are the run's).
    tuned = build_config(None, [*both, "engines.judge.max_model_len=2048"], kind=FilterPassConfig).engines_for(lambda: run_gen, "r")
    assert tuned["judge"] == run_gen.model_copy(update={"max_model_len": 2048}) and tuned["consistency"] == run_gen
    # A rating-only pass gets its engine too.
    assert build_config(None, ["filters.rating.enabled=true"], kind=FilterPassConfig).engines_for(lambda: run_gen, "r") == {"rating": run_gen}
    # A run recording no generator: fine while every model is named, refused (naming the field) otherwise.
    named = build_config(None, [*both, "engines.judge.model=org/judge", "engines.reanswerer.model=org/judge"], kind=FilterPassConfig)
    assert named.engines_for(lambda: None, "r")["judge"] == EngineConfig(model="org/judge")
    with pytest.raises(ConfigError, match="engines.reanswerer.model is unset and the run at r records no generator"):
        build_config(None, [*both, "engines.judge.model=org/judge"], kind=FilterPassConfig).engines_for(lambda: None, "r")

    # Every model and the engine named: the run's generator is not read at all (it may not be usable here).
    def unusable():
        raise ConfigError("the generator recorded by the run cannot be used here")

    settled = build_config(None, ["filters.judge.enabled=true", "engines.judge.model=org/judge", "engines.judge.backend=transformers"],
                           kind=FilterPassConfig)
    assert settled.engines_for(unusable, "r") == {"judge": EngineConfig(model="org/judge", backend="transformers")}
    with pytest.raises(ConfigError, match="cannot be used here"):
        build_config(None, ["filters.judge.enabled=true"], kind=FilterPassConfig).engines_for(unusable, "r")
    # CLIP alone needs no engine.
    assert build_config(None, ["filters.clip.enabled=true"], kind=FilterPassConfig).engines_for(unusable, "r") == {}
    # Images decode as the run decoded them, unless the pass says otherwise; credentials are the pass's.
    cfg = build_config(None, ['images.storage_options={"anon": true}'], kind=FilterPassConfig)
    assert cfg.decode_config({"max_side": 512, "max_pixels": 10**6, "storage_options": {"key": "***"}}).model_dump(
        include={"max_side", "max_pixels", "storage_options"}
    ) == {"max_side": 512, "max_pixels": 10**6, "storage_options": {"anon": True}}
    assert build_config(None, ["images.max_side=256"], kind=FilterPassConfig).decode_config({"max_side": 512}).max_side == 256


def test_a_run_config_given_to_a_filter_pass_says_where_its_settings_go():
    from genixer_ray.config import FilterPassConfig

    with pytest.raises(ConfigError) as e:
        build_config({"generator": {"model": "x"}, "output": {"storage_options": {}}}, kind=FilterPassConfig)
    msg = str(e.value)
    assert "invalid filter pass configuration" in msg and "no generator, output section" in msg
    assert "engines.judge" in msg and "run.storage_options" in msg


def test_redaction_masks_credentials_at_any_depth():
    import json

    from genixer_ray.config import TrainConfig, build_config, redacted

    secret = "PLANTED-7f3a9"
    sources = [{"format": "gqa", "path": f"s3://ak:{secret}@bucket/q.json", "image_root": "s3://bucket/images",
                "storage_options": {"key": secret, "secret": secret, "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}}]
    cfg = build_config(None, [f"data.sources={json.dumps(sources)}", f"storage_options={json.dumps({'token': secret})}"], kind=TrainConfig)
    out = redacted(cfg)
    assert secret not in json.dumps(out)
    assert out["data"]["sources"][0]["storage_options"] == {"key": "***", "secret": "***", "client_kwargs": "***"}
    assert out["data"]["sources"][0]["path"] == "s3://***@bucket/q.json" and out["storage_options"] == {"token": "***"}
    run = build_config(None, [f"output.path=s3://u:{secret}@b/runs", f"input.storage_options={json.dumps({'password': secret})}"])
    assert secret not in json.dumps(redacted(run)) and redacted(run)["output"]["path"] == "s3://***@b/runs"
    # A count is not a credential: the config a run records keeps its lengths readable.
    assert redacted(run)["sampling"]["max_tokens"] == 96 and redacted(run)["filters"]["consistency"]["max_tokens"] == 32


def test_one_model_reference_check_for_every_kind(tmp_path):
    from genixer_ray.models import resolve_model

    cfg = load_config(None, [f"engines.judge.model={tmp_path}", "filters.clip.model=ViT-B-32/laion2b_s34b_b79k"])
    assert cfg.engines.judge.model == str(tmp_path.resolve())
    for override, said in [
        ("filters.clip.model=ViT-B-32", "without weights"),  # open_clip would silently use random weights
        ("engines.reanswerer.model=./missing", "no model directory"),
        ("engines.generator.model=~/missing-model", "no model directory"),
    ]:
        with pytest.raises(ConfigError, match=said):
            load_config(None, [override])
    assert resolve_model(str(tmp_path), kind="clip") == str(tmp_path.resolve())
    assert resolve_model("org/name") == "org/name"
    with pytest.raises(ValueError, match="model kind"):
        resolve_model("tiny", kind="judge")


def test_a_config_is_read_from_object_storage(s3, monkeypatch):
    """Jobs take a config URI (``s3://...``); credentials and endpoint come from the environment."""
    import fsspec

    fsspec.filesystem("s3", **s3["storage_options"]).pipe_file(f"{s3['bucket']}/configs/run.yaml", b"name: from-s3\nmode: agnostic\n")
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": s3["endpoint"]}.items():
        monkeypatch.setenv(k, v)
    cfg = load_config(f"s3://{s3['bucket']}/configs/run.yaml", ["sampling.temperature=0.1"])
    assert cfg.name == "from-s3" and cfg.mode == "agnostic" and cfg.sampling.temperature == 0.1
    with pytest.raises(ConfigError, match=f"config file not found: s3://{s3['bucket']}/configs/missing.yaml"):
        load_config(f"s3://{s3['bucket']}/configs/missing.yaml")
