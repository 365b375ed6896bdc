"""The engines: which model each runs and how it is built (the generator's, the judge's, the
re-answerer's, the rater's), one section each under ``engines``.

A filter whose engine is not given uses the generator's own: in a run, on the generator's actors
(no second engine); in a filter pass, the run's generator (read from the run) on the filter
actors. One that is given takes the generator's settings for every field it leaves unset, so
``engines.judge: {model: DIR}`` is that model on the generator's engine settings, built on the
filter actors (filters whose engines are equal share one).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from genixer_ray.config.base import ModelSpec, Strict

# The filters that ask a model, and the engine section each one's model is named in.
FILTER_ENGINES = {"judge": "judge", "consistency": "reanswerer", "rating": "rater"}


class EngineConfig(Strict):
    """A model and how its engine is built and sized: the generator's, and each filter's engine."""

    model: ModelSpec = Field("tiny", description="A local model directory, a hub id, or 'tiny' for the locally built tiny LLaVA.")
    backend: Literal["vllm", "transformers"] = Field("vllm", description="vLLM for throughput; transformers for small models or machines without vLLM.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights' dtype in the engine.")
    max_model_len: int = Field(1024, ge=64, description="Prompt (image tokens included) plus output; longer prompts become error rows.")
    gpu_memory_utilization: float | None = Field(
        None, gt=0.0, le=1.0,
        description="vLLM's share of accelerator memory; unset: 0.9 on GPUs, 0.2 on CPU (where it is a share of one NUMA node's memory).",
    )
    cpu_kvcache_space_gib: int = Field(1, ge=1, description="vLLM on CPU only: KV-cache size in GiB (VLLM_CPU_KVCACHE_SPACE, if not set already).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one engine spans.")
    max_num_seqs: int = Field(
        256, ge=1, description="Sequences the engine decodes at once (vLLM's own offline default on most GPUs; H100-class take 1024).",
    )
    enforce_eager: bool = Field(False, description="Skip CUDA-graph capture: faster start, slower decode.")
    block_size: int | None = Field(
        None, ge=16, le=256, multiple_of=16,
        description="vLLM: tokens per KV-cache block, the unit its prefix cache shares. Unset: vLLM's default (16 on GPUs, "
        "128 on CPU, where 32 lets a rating's axes share the sample's tokens too: BENCHMARKS.md, Rating). vLLM-CPU takes multiples of 32 only.",
    )

    def concurrent_batches(self, batch_size: int, samples_per_row: int = 1) -> int:
        """Calls of ``batch_size`` rows (``samples_per_row`` requests each) one engine runs at once.

        vLLM: enough for ``max_num_seqs`` sequences to run while one more batch waits, so the
        engine never drains at a batch boundary; transformers runs one batch per ``generate``.
        """
        if self.backend != "vllm":
            return 1
        return -(-self.max_num_seqs // (batch_size * samples_per_row)) + 1

    def memory_utilization(self, *, cpu: bool) -> float:
        """The memory share to give vLLM on this platform."""
        if self.gpu_memory_utilization is not None:
            return self.gpu_memory_utilization
        return 0.2 if cpu else 0.9


class EngineOverride(EngineConfig):
    """A filter's engine in a filter pass: the fields set here, the run's generator's for the others."""

    model: ModelSpec | None = Field(None, description="The model (directory, hub id, 'tiny'); unset: the run's generator.")

    def resolve(self, base: EngineConfig | None) -> EngineConfig:
        """This engine: the fields set here over ``base`` (the run's generator; ``None``: the defaults)."""
        given = self.model_dump(include=self.model_fields_set)
        return EngineConfig.model_validate((base.model_dump() if base else {}) | given)


def _over_generator(generator: Any, given: Any) -> Any:
    """A filter engine's raw settings with the generator's (raw) settings under them."""
    if isinstance(generator, BaseModel):
        generator = generator.model_dump(exclude_unset=True)
    if not isinstance(given, dict) or not isinstance(generator, dict):
        return given
    return generator | given


_FILTER_ENGINE = (
    "{}'s engine, on the filter actors: the fields given, the generator's for the others (model included); "
    "unset: the generator's own engine, on its actors."
)


class EnginesConfig(Strict):
    """A generation run's engines: the generator, and the filters' models that are not the generator."""

    generator: EngineConfig = Field(default_factory=EngineConfig, description="The generator: its model and engine.")
    judge: EngineConfig | None = Field(None, description=_FILTER_ENGINE.format("The judge (filters.judge)"))
    reanswerer: EngineConfig | None = Field(None, description=_FILTER_ENGINE.format("The re-answerer (filters.consistency)"))
    rater: EngineConfig | None = Field(None, description=_FILTER_ENGINE.format("The rater (filters.rating)"))

    @model_validator(mode="before")
    @classmethod
    def _filter_engines_over_generator(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for name in FILTER_ENGINES.values():
                if data.get(name) is not None:
                    data[name] = _over_generator(data.get("generator") or {}, data[name])
        return data

    def for_filters(self, names: list[str]) -> tuple[dict[str, EngineConfig], set[str]]:
        """The engine of each filter in ``names`` that asks a model, and those of them on the generator's own engine."""
        asking = [n for n in names if n in FILTER_ENGINES]
        on_generator = {n for n in asking if getattr(self, FILTER_ENGINES[n]) is None}
        return {n: getattr(self, FILTER_ENGINES[n]) or self.generator for n in asking}, on_generator

    def models(self, names: list[str]) -> set[str]:
        """The models that see a run's decoded images: the generator's, and those of the filters in ``names``."""
        return {self.generator.model} | {e.model for e in self.for_filters(names)[0].values()}


_PASS_ENGINE = "{}'s engine: the fields given, the run's generator's for the others; unset: the run's generator."


class PassEnginesConfig(Strict):
    """A filter pass's engines: the filters' models (the run's generator for those not given)."""

    judge: EngineOverride | None = Field(None, description=_PASS_ENGINE.format("The judge (filters.judge)"))
    reanswerer: EngineOverride | None = Field(None, description=_PASS_ENGINE.format("The re-answerer (filters.consistency)"))
    rater: EngineOverride | None = Field(None, description=_PASS_ENGINE.format("The rater (filters.rating)"))

    @model_validator(mode="before")
    @classmethod
    def _no_generator(cls, data: Any) -> Any:
        if isinstance(data, dict) and "generator" in data:
            raise ValueError(
                "a filter pass generates nothing: its judge, re-answerer and rater are engines.judge, engines.reanswerer and "
                "engines.rater (unset: the run's generator, read from the run)"
            )
        return data
