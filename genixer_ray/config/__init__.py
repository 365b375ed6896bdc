"""Typed run configuration: one YAML file describes a run, validated when it is loaded.

A config error names the dotted field and the bad value, before any work starts::

    ConfigError: generator.backend: Input should be 'vllm' or 'transformers' (got 'vlm')

The command line picks the file and overrides a few keys with ``key.sub=value`` pairs whose
values are parsed as YAML scalars (``sampling.temperature=0.2``, ``input.limit=null``).

A config is laid out by component: ``engines`` (each model and how its engine is built), ``pools``
(the decode tasks and each actor pool: size, resources, batch size), ``ray`` (the cluster), and
``filters`` (what each filter asks and keeps). The package holds one module per concern: ``base``
(shared types, redaction), ``engines``, ``pools``, ``run`` (generation), ``filters``,
``filter_pass`` (a separate filter pass), ``train``, ``legacy`` (the layout before components,
translated) and ``loading``; every name is importable from here.
"""

from genixer_ray.config.base import (
    TASK_IDS,
    ClipModelSpec,
    ModelSpec,
    Strict,
    TaskIdMap,
    TaskWeights,
    redact,
    redacted,
)
from genixer_ray.config.decontamination import DecontaminationConfig, EvalSource
from genixer_ray.config.engines import FILTER_ENGINES, EngineConfig, EngineOverride, EnginesConfig, PassEnginesConfig
from genixer_ray.config.filter_pass import FilterPassConfig, ImagesConfig, StoreConfig
from genixer_ray.config.filters import (
    RATING_AXES,
    ClipFilterConfig,
    ConsistencyConfig,
    DedupConfig,
    FiltersConfig,
    JudgeConfig,
    RatingConfig,
)
from genixer_ray.config.loading import apply_overrides, build_config, load_config
from genixer_ray.config.pools import ActorPoolConfig, ClusterConfig, DecodePoolConfig, PassPoolsConfig, PoolsConfig, RayConfig
from genixer_ray.config.publish import PublishConfig
from genixer_ray.config.run import ImageDedupConfig, InputConfig, OutputConfig, PromptsConfig, RunConfig, SamplingConfig
from genixer_ray.config.train import (
    FIXTURE_SOURCES,
    PRACTICE_SOURCES,
    DataSource,
    LoraConfig,
    OptimConfig,
    TrainConfig,
    TrainDataConfig,
    TrainModelConfig,
    TrainScalingConfig,
)
from genixer_ray.errors import ConfigError

__all__ = [
    "FILTER_ENGINES", "FIXTURE_SOURCES", "PRACTICE_SOURCES", "TASK_IDS", "ActorPoolConfig", "ClipFilterConfig", "ClipModelSpec", "ClusterConfig", "ConfigError",
    "ConsistencyConfig", "DataSource", "DecodePoolConfig", "DecontaminationConfig", "DedupConfig", "EngineConfig", "EngineOverride", "EnginesConfig",
    "EvalSource", "FilterPassConfig", "FiltersConfig", "ImageDedupConfig", "ImagesConfig",
    "InputConfig", "JudgeConfig", "LoraConfig", "ModelSpec", "OptimConfig", "OutputConfig", "PassEnginesConfig", "PassPoolsConfig", "PoolsConfig",
    "PromptsConfig", "PublishConfig", "RATING_AXES", "RatingConfig", "RayConfig",
    "RunConfig", "SamplingConfig", "StoreConfig", "Strict", "TaskIdMap", "TaskWeights", "TrainConfig",
    "TrainDataConfig", "TrainModelConfig", "TrainScalingConfig",
    "apply_overrides", "build_config", "load_config", "redact", "redacted",
]
