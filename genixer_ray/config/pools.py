"""Where the work runs: the decode tasks, each actor pool (size, resources, batch size), and the Ray cluster.

One section per component (``pools.decode``, ``pools.generator``, ``pools.filters``, ``ray``):
every pool's batch size sits with the pool whose calls it sizes.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from genixer_ray.config.base import Strict


class ActorPoolConfig(Strict):
    """An autoscaling pool of Ray actors, one engine or model each, and the rows each call takes.

    The generator pool (``pools.generator``) and the filter pool (``pools.filters``) take the same options.
    """

    min_actors: int = Field(1, ge=1, description="Actors kept alive; more cost idle accelerators.")
    max_actors: int = Field(1, ge=1, description="Actors Ray Data may scale up to while work is queued.")
    cpus_per_actor: float = Field(1.0, gt=0.0, description="CPUs reserved per actor.")
    gpus_per_actor: float = Field(
        0.0, ge=0.0,
        description="Accelerators per actor (a vLLM generator: one per tensor-parallel rank; CLIP fits beside others: 0.25 is common).",
    )
    actor_resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources each actor needs (pins actors to labelled nodes)."
    )
    accelerator_type: str | None = Field(
        None, description="Only on nodes with this accelerator (Ray's label, e.g. L4, A100, H100); with gpus_per_actor > 0."
    )
    max_tasks_in_flight_per_actor: int = Field(2, ge=1, description="Batches queued per actor: 2 keeps the engine fed while the next batch transfers.")
    batch_size: int = Field(
        16, ge=1,
        description="Rows per call of the pool's stages; an actor on a vLLM engine runs several calls at once, enough to keep "
        "its max_num_seqs sequences running.",
    )

    @model_validator(mode="after")
    def _actor_counts(self) -> ActorPoolConfig:
        if self.min_actors > self.max_actors:
            raise ValueError(f"min_actors ({self.min_actors}) exceeds max_actors ({self.max_actors})")
        if self.accelerator_type and not self.gpus_per_actor:
            raise ValueError(f"accelerator_type ({self.accelerator_type}) needs gpus_per_actor > 0")
        return self

    @property
    def reserved_cpus(self) -> float:
        """The CPUs the pool holds at its largest."""
        return self.max_actors * self.cpus_per_actor


class DecodePoolConfig(Strict):
    """The read tasks: each reads a shard's rows and decodes (and fingerprints) their images."""

    cpus: float = Field(0.5, gt=0.0, description="CPUs per decode task; fractional lets decode share small machines.")
    tasks: int | None = Field(
        None, ge=1,
        description="Decode tasks running at once. Unset: on a local Ray instance, the machine's cores (more would only compete "
        "with the engines for them, each new worker process costing seconds of CPU to start); on a cluster, as many as its CPUs allow.",
    )
    batch_size: int = Field(16, ge=1, description="Images per decode call.")


class PassPoolsConfig(Strict):
    """A filter pass's pools: the read tasks and the filter actors."""

    decode: DecodePoolConfig = Field(default_factory=DecodePoolConfig)
    filters: ActorPoolConfig = Field(
        default_factory=ActorPoolConfig,
        description="The filter actors: CLIP, and the judge, re-answerer and rater on their own engines.",
    )


class PoolsConfig(PassPoolsConfig):
    """A generation run's pools: the read tasks, the generator actors, the filter actors."""

    generator: ActorPoolConfig = Field(
        default_factory=ActorPoolConfig,
        description="The generator actors: prompt, generate, parse, and the filters on the generator's own engine.",
    )


class ClusterConfig(Strict):
    """Which Ray cluster runs the work."""

    address: str | None = Field(None, description="Ray cluster to join ('auto' inside `ray job submit`); unset: start or reuse a local one.")


class RayConfig(ClusterConfig):
    """Which Ray cluster runs the work, and how long a run may go without progress."""

    actor_start_timeout_s: float = Field(
        1800.0, gt=0.0,
        description="How long a run may go without progress (an actor, e.g. a large vLLM engine, starting; the cluster scaling up) "
        "before it stops.",
    )
