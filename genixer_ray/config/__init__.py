"""Typed run configuration: one YAML file describes a run, validated when it is loaded.

A config error names the dotted field and the bad value, before any work starts::

    ConfigError: generator.backend: Input should be 'vllm' or 'transformers' (got 'vlm')

The command line picks the file and overrides a few keys with ``key.sub=value`` pairs whose
values are parsed as YAML scalars (``sampling.temperature=0.2``, ``input.limit=null``).

The package holds one module per concern: ``base`` (shared types, the actor pool, redaction),
``run`` (generation), ``filters``, ``filter_pass`` (a separate filter pass), ``train`` and ``loading``; every name is importable from here.
"""

from genixer_ray.config.base import (
    TASK_IDS,
    ActorPoolConfig,
    ClipModelSpec,
    ModelSpec,
    Strict,
    TaskIdMap,
    TaskWeights,
    redact,
    redacted,
)
from genixer_ray.config.decontamination import DecontaminationConfig, EvalSource
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
from genixer_ray.config.publish import PublishConfig
from genixer_ray.config.run import (
    EngineConfig,
    GeneratorConfig,
    InputConfig,
    OutputConfig,
    PromptsConfig,
    RayConfig,
    RunConfig,
    SamplingConfig,
    ScalingConfig,
)
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
    "FIXTURE_SOURCES", "PRACTICE_SOURCES", "TASK_IDS", "ActorPoolConfig", "ClipFilterConfig", "ClipModelSpec", "ConfigError",
    "ConsistencyConfig", "DataSource", "DecontaminationConfig", "DedupConfig", "EvalSource", "EngineConfig", "FilterPassConfig", "FiltersConfig", "GeneratorConfig", "ImagesConfig",
    "InputConfig", "JudgeConfig", "LoraConfig", "ModelSpec", "OptimConfig", "OutputConfig", "PromptsConfig", "PublishConfig", "RATING_AXES", "RatingConfig", "RayConfig",
    "RunConfig", "SamplingConfig", "ScalingConfig", "StoreConfig", "Strict", "TaskIdMap", "TaskWeights", "TrainConfig",
    "TrainDataConfig", "TrainModelConfig", "TrainScalingConfig",
    "apply_overrides", "build_config", "load_config", "redact", "redacted",
]
