"""A separate filter pass's config: the filters (the judge named as the judge), their engines, and
how the run's images are read again.

A filter pass scores a run that already exists, so nothing of generation applies: the model a
judge or re-answerer without its own ``model`` uses is the run's generator, read from the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field, model_validator

from genixer_ray.config.base import Strict, Views
from genixer_ray.config.decontamination import DecontaminationConfig
from genixer_ray.config.filters import FiltersConfig
from genixer_ray.config.publish import PublishConfig
from genixer_ray.config.run import EngineConfig, GeneratorConfig, InputConfig, RayConfig
from genixer_ray.errors import ConfigError

# A run config's sections given to a filter pass, and where their settings belong instead.
_RUN_SECTIONS = {
    "generator": "name the judge as filters.judge.model and the re-answerer as filters.consistency.model "
    "(unset: the run's generator); engine settings go under engine",
    "input": "images.storage_options, images.max_side and images.max_pixels say how the run's images are read again",
    "output": "run.storage_options are the credentials of the run's store (the pass writes to {run}/filtered/{filters.name})",
}


class StoreConfig(Strict):
    """Credentials of a store."""

    storage_options: dict[str, Any] = Field(default_factory=dict, description="Passed to fsspec (endpoint, credentials); unset: from the environment.")


class ImagesConfig(StoreConfig):
    """How the run's images are read and decoded again for scoring."""

    max_side: int | None = Field(None, ge=16, description="Longest side images are decoded to; unset: as the run decoded them.")
    max_pixels: int | None = Field(None, ge=1, description="Images with more pixels are refused; unset: the run's limit.")


class FilterPassConfig(Strict):
    """One filter pass over an existing run (``genixer-ray filter RUN CONFIG``)."""

    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    engine: EngineConfig | None = Field(
        None, description="How the judge's and re-answerer's engines are built (backend, dtype, lengths); unset: as the run's generator's."
    )
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    run: StoreConfig = Field(default_factory=StoreConfig, description="The run's store: read, and written under {run}/filtered/{filters.name}.")
    scaling: RayConfig = Field(default_factory=RayConfig)
    decontamination: DecontaminationConfig = Field(
        default_factory=DecontaminationConfig,
        description="Match the run's images and generated questions against evaluation sets (rows that match are rejected).",
    )
    publish: PublishConfig = Field(default_factory=PublishConfig, description="The card's fields and layouts of `genixer-ray publish` of this pass.")
    views: Views = Field(default_factory=dict, description="Named selections of the pass's parsed rows (as a run config's views), beside its run's.")

    @model_validator(mode="before")
    @classmethod
    def _not_a_run_config(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [k for k in _RUN_SECTIONS if k in data]
            if given:
                hints = "; ".join(f"{k}: {_RUN_SECTIONS[k]}" for k in given)
                raise ValueError(f"a filter pass config has no {', '.join(given)} section ({hints})")
        return data

    @model_validator(mode="after")
    def _no_ignored_engine_setting(self) -> FilterPassConfig:
        if self.engine is not None and "batch_size" in self.engine.model_fields_set:
            raise ValueError(
                "engine.batch_size does not apply to a filter pass: its actors take filters.batch_size rows per call"
            )
        return self

    def engine_for(self, recorded_generator: Callable[[], GeneratorConfig | None], run: str) -> GeneratorConfig | None:
        """The engine of the judge and re-answerer: its settings, and the model of those naming none.

        ``None`` when neither runs. The model is the run's generator and the settings are
        ``engine``'s, else the run's generator's; ``recorded_generator`` reads it from the run (or gives
        ``None``), and is called only when one of them is needed, so that a pass whose filters name
        their models and engine does not depend on the run's generator being usable here.

        Raises:
            ConfigError: a judge or re-answerer without a model, and a run that records no generator.
        """
        users = {n: s for n, s in (("judge", self.filters.judge), ("consistency", self.filters.consistency)) if s.enabled}
        if not users:
            return None
        unnamed = [n for n, s in users.items() if s.model is None]
        recorded = recorded_generator() if unnamed or self.engine is None else None
        if unnamed and recorded is None:
            raise ConfigError(
                f"filters.{unnamed[0]}.model is unset and the run at {run} records no generator (no run.json): name the model"
            )
        settings = self.engine or recorded or EngineConfig()
        model = recorded.model if recorded else next(s.model for s in users.values())
        return GeneratorConfig.model_validate({**settings.model_dump(include=set(EngineConfig.model_fields)), "model": model})

    def decode_config(self, planned: dict) -> InputConfig:
        """How images are decoded again: the run's limits (``planned``, its recorded input) unless set here."""
        limits = {k: v for k, v in planned.items() if k in ("max_side", "max_pixels")}
        given = self.images.model_dump(include={"max_side", "max_pixels"}, exclude_none=True)
        return InputConfig(storage_options=self.images.storage_options, **(limits | given))
