"""A separate filter pass's config: the filters, their engines and pools, and how the run's images
are read again.

A filter pass scores a run that already exists, so nothing of generation applies: the model a
judge or re-answerer without its own ``model`` uses is the run's generator, read from the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field, field_validator, model_validator

from genixer_ray.config.base import Strict, Views, path_safe_name
from genixer_ray.config.decontamination import DecontaminationConfig
from genixer_ray.config.engines import FILTER_ENGINES, EngineConfig, PassEnginesConfig
from genixer_ray.config.filters import FiltersConfig
from genixer_ray.config.pools import PassPoolsConfig, RayConfig
from genixer_ray.config.publish import PublishConfig
from genixer_ray.config.run import InputConfig
from genixer_ray.errors import ConfigError

# A run config's sections given to a filter pass, and where their settings belong instead.
_RUN_SECTIONS = {
    "generator": "the judge, re-answerer and rater are engines.judge, engines.reanswerer and engines.rater (unset: the run's generator)",
    "input": "images.storage_options, images.max_side and images.max_pixels say how the run's images are read again",
    "output": "run.storage_options are the credentials of the run's store (the pass writes to {run}/filtered/{name})",
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

    name: str = Field("default", min_length=1, max_length=128, description="The pass's name: it writes to {run}/filtered/{name}.")
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    engines: PassEnginesConfig = Field(default_factory=PassEnginesConfig)
    pools: PassPoolsConfig = Field(default_factory=PassPoolsConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    run: StoreConfig = Field(default_factory=StoreConfig, description="The run's store: read, and written under {run}/filtered/{name}.")
    decontamination: DecontaminationConfig = Field(
        default_factory=DecontaminationConfig,
        description="Match the run's images and generated questions against evaluation sets (rows that match are rejected).",
    )
    publish: PublishConfig = Field(default_factory=PublishConfig, description="The card's fields and layouts of `genixer-ray publish` of this pass.")
    views: Views = Field(default_factory=dict, description="Named selections of the pass's parsed rows (as a run config's views), beside its run's.")

    _name_is_path_safe = field_validator("name")(path_safe_name)

    @model_validator(mode="before")
    @classmethod
    def _not_a_run_config(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [k for k in _RUN_SECTIONS if k in data]
            if given:
                hints = "; ".join(f"{k}: {_RUN_SECTIONS[k]}" for k in given)
                raise ValueError(f"a filter pass config has no {', '.join(given)} section ({hints})")
        return data

    def engines_for(self, recorded_generator: Callable[[], EngineConfig | None], run: str) -> dict[str, EngineConfig]:
        """The engine of each enabled filter that asks a model (``judge``, ``consistency``, ``rating``).

        Each is its ``engines`` section's fields over the run's generator (``recorded_generator``
        reads it from the run, or gives ``None``); a filter without a section is the run's generator.
        The run is read only when it is needed, so that a pass whose engines name their models does
        not depend on the run's generator being usable here (unset fields are then the defaults).

        Raises:
            ConfigError: an engine without a model, and a run that records no usable generator.
        """
        enabled = self.filters.enabled()
        given = {n: getattr(self.engines, e) for n, e in FILTER_ENGINES.items() if n in enabled}
        if not given:
            return {}
        unnamed = [n for n, e in given.items() if e is None or e.model is None]
        try:
            recorded = recorded_generator()
        except ConfigError:
            if unnamed:
                raise
            recorded = None
        if unnamed and recorded is None:
            raise ConfigError(
                f"engines.{FILTER_ENGINES[unnamed[0]]}.model is unset and the run at {run} records no generator (no run.json): name the model"
            )
        return {n: e.resolve(recorded) if e is not None else recorded for n, e in given.items()}

    def decode_config(self, planned: dict) -> InputConfig:
        """How images are decoded again: the run's limits (``planned``, its recorded input) unless set here."""
        limits = {k: v for k, v in planned.items() if k in ("max_side", "max_pixels")}
        given = self.images.model_dump(include={"max_side", "max_pixels"}, exclude_none=True)
        return InputConfig(storage_options=self.images.storage_options, **(limits | given))
