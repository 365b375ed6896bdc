"""The generation run's config: sampling, generator, input, output, scaling, prompts, filters."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from genixer_ray.config.base import TASK_IDS, ActorPoolConfig, ModelSpec, Strict, TaskWeights, Views, path_safe_name
from genixer_ray.config.decontamination import DecontaminationConfig
from genixer_ray.config.filters import FiltersConfig
from genixer_ray.config.publish import PublishConfig
from genixer_ray.prompts import PROFILES, build_profile


class SamplingConfig(Strict):
    """How the generator samples; recorded on every row as provenance."""

    temperature: float = Field(0.7, ge=0.0, le=5.0, description="0 is greedy; higher gives more varied questions and more parse failures.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus mass kept before sampling.")
    top_k: int = Field(0, ge=0, description="Sample among the k likeliest tokens only, before top_p (0: no limit).")
    max_tokens: int = Field(96, ge=1, le=8192, description="Generated tokens per sample; longer dialogues need more.")
    seed: int = Field(0, ge=0, description="Base seed; each row's seed is derived from it and the row so results repeat.")
    logprobs: int = Field(0, ge=0, le=20, description="How many top alternatives to keep per generated token (0: only the chosen token's logprob).")


class EngineConfig(Strict):
    """How a model's engine is built and sized (the generator's, a judge's, a re-answerer's)."""

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
    batch_size: int = Field(
        16, ge=1,
        description="Rows handed to the engine per call; vLLM actors run several calls at once, enough to keep max_num_seqs sequences running.",
    )
    enforce_eager: bool = Field(False, description="Skip CUDA-graph capture: faster start, slower decode.")
    block_size: int | None = Field(
        None, ge=16, le=256, multiple_of=16,
        description="vLLM: tokens per KV-cache block, the unit its prefix cache shares. Unset: vLLM's default (16 on GPUs, "
        "128 on CPU, where 32 lets a rating's axes share the sample's tokens too: BENCHMARKS.md, Rating).",
    )

    def concurrent_batches(self, samples_per_row: int = 1) -> int:
        """Batches one engine runs at once (a batch of ``batch_size`` rows, ``samples_per_row`` requests each).

        vLLM: enough for ``max_num_seqs`` sequences to run while one more batch waits, so the
        engine never drains at a batch boundary; transformers runs one batch per ``generate``.
        """
        if self.backend != "vllm":
            return 1
        return -(-self.max_num_seqs // (self.batch_size * samples_per_row)) + 1

    def memory_utilization(self, *, cpu: bool) -> float:
        """The memory share to give vLLM on this platform."""
        if self.gpu_memory_utilization is not None:
            return self.gpu_memory_utilization
        return 0.2 if cpu else 0.9


class GeneratorConfig(EngineConfig):
    """Which model generates, and how its engine is sized."""

    model: ModelSpec = Field("tiny", description="A local model directory, a hub id, or 'tiny' for the locally built tiny LLaVA.")

    def for_model(self, model: str) -> GeneratorConfig:
        """These engine settings for another ``model`` (a judge's, a re-answerer's)."""
        return self.model_copy(update={"model": model})


class InputConfig(Strict):
    """Where the images come from."""

    source: str = Field(
        "embedded",
        description="'embedded' (bundled sample photos), a folder URL, or a manifest URL (.jsonl, .csv, .parquet).",
    )
    root: str | None = Field(None, description="Manifest only: folder that relative paths resolve under (default: the manifest's folder).")
    limit: int | None = Field(None, ge=1, description="Take at most this many images (in listing order).")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="Passed to fsspec for the input (endpoint, credentials).")
    max_pixels: int = Field(64_000_000, ge=1, description="Images with more pixels are refused (error row too_large) before decoding.")
    max_side: int = Field(1024, ge=16, description="Decoded images are downscaled to this longest side; bounds memory per row.")
    short_side: int | None = Field(
        None, ge=16,
        description="Decoded images are downscaled so their shorter side is at most this, the size their consumer needs. Unset: "
        "the largest input side of the run's generator and judge (from their image processors), so rows carry no pixels the "
        "engine would discard; max_side alone when the run scores CLIP crops (small regions need the pixels) or a side is unknown.",
    )


class OutputConfig(Strict):
    """Where results are written (any fsspec URL)."""

    path: str = Field("runs", description="Root under which the run's folder is created.")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="Passed to fsspec for the output (endpoint, credentials).")
    shard_size: int = Field(256, ge=1, le=1_000_000, description="Rows per output shard: the unit of commit and resume. Smaller loses less on a crash; larger makes fewer files.")


class RayConfig(Strict):
    """Which Ray cluster runs the work, and what its decode tasks and actor start-up may take."""

    ray_address: str | None = Field(None, description="Ray cluster to join ('auto' inside `ray job submit`); unset: start or reuse a local one.")
    decode_cpus: float = Field(0.5, gt=0.0, description="CPUs per decode task; fractional lets decode share small machines.")
    decode_tasks: int | None = Field(
        None, ge=1,
        description="Decode tasks running at once. Unset: on a local Ray instance, the machine's cores (more would only compete "
        "with the engines for them, each new worker process costing seconds of CPU to start); on a cluster, as many as its CPUs allow.",
    )
    actor_start_timeout_s: float = Field(
        1800.0, gt=0.0,
        description="How long a run may go without progress (an actor, e.g. a large vLLM engine, starting; the cluster scaling up) "
        "before it stops.",
    )


class ScalingConfig(ActorPoolConfig, RayConfig):
    """How Ray runs the stages: the generator actor pool (autoscaling, resources per actor) and the decode tasks."""

    decode_batch_size: int = Field(16, ge=1, description="Images per decode task call.")


def _pool_file(v: Any, placeholder: str | None = None) -> Any:
    """A phrasing pool: a list of strings, or the URL of a JSON file holding one (Genixer's shape).

    ``<image>`` markers are removed (the engine places the image); with ``placeholder`` every
    phrasing must contain it.
    """
    if v is None:
        return None
    if isinstance(v, str):
        import json

        import fsspec

        try:
            with fsspec.open(v, "rt", encoding="utf-8") as f:
                v = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read a JSON list of strings from {v}: {e}") from None
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x.strip() for x in v):
        raise ValueError("expected a non-empty JSON list of non-empty strings")
    pool = [" ".join(x.replace("<image>", " ").split()) for x in v]
    if placeholder and not all(placeholder in x for x in pool):
        raise ValueError(f"every phrasing must contain {placeholder}")
    return pool


class PromptsConfig(Strict):
    """How instructions are worded: a prompt profile and its phrasing pools (training and generation alike)."""

    profile: Literal[tuple(PROFILES)] = Field(
        "genixer-ray",
        description="'genixer-ray': this project's task sentences; 'genixer-l' / 'genixer-s': the exact task sentences, "
        "separators and fixed dialogue prompt the released Genixer generators were trained with.",
    )
    generic_pool: list[str] | None = Field(
        None, description="Generic instructions (a list, or a JSON file such as Genixer's GenQA_general_instructions.json); unset: this project's 54."
    )
    rec_questions: list[str] | None = Field(None, description="REC question phrasings with <expr> (a list or a JSON file such as REC_question.json).")
    reg_questions: list[str] | None = Field(None, description="REG question phrasings with <objs> (a list or a JSON file such as REG_question.json).")

    _generic = field_validator("generic_pool", mode="before")(lambda v: _pool_file(v))
    _rec = field_validator("rec_questions", mode="before")(lambda v: _pool_file(v, "<expr>"))
    _reg = field_validator("reg_questions", mode="before")(lambda v: _pool_file(v, "<objs>"))

    def build(self):
        """The :class:`~genixer_ray.prompts.PromptProfile` these settings describe."""
        return build_profile(self.profile, generic=self.generic_pool, rec_questions=self.rec_questions, reg_questions=self.reg_questions)


class RunConfig(Strict):
    """One generation run."""

    name: str = Field("demo", min_length=1, max_length=128, description="Run id: names the output folder, so re-runs find their earlier output.")
    mode: Literal["agnostic", "specific"] = Field(
        "specific", description="'agnostic': generic instruction only, the model picks the task; 'specific': plus a task sentence from task_mix."
    )
    task_mix: TaskWeights = Field(
        default_factory=lambda: {t: 1.0 for t in TASK_IDS},
        description="Task id -> relative weight for task-specific mode (ids: " + ", ".join(TASK_IDS) + ").",
    )
    samples_per_image: int = Field(
        1, ge=1, le=64,
        description="Samples generated per image. The image is read and decoded once and its requests run back to back in one "
        "engine (vLLM's prefix and encoder caches reuse its tokens); in task-specific mode an image's samples take different "
        "tasks of task_mix while any are left. Every (image, sample) is one output row.",
    )
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    decontamination: DecontaminationConfig = Field(default_factory=DecontaminationConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig, description="The card's fields and layouts of `genixer-ray publish`.")
    views: Views = Field(
        default_factory=dict,
        description="Named selections of parsed rows, NAME: SQL condition over the row's columns (e.g. strict: \"judge_p_yes >= 0.8 "
        "and clip_score >= 0.25\"), for export, publish, report and inspect --view NAME; kept, parsed and paper are built in (genixer_ray/views.py).",
    )

    @field_validator("task_mix")
    @classmethod
    def _some_task(cls, v: dict[str, float]) -> dict[str, float]:
        if not any(w > 0 for w in v.values()):
            raise ValueError("at least one weight must be > 0")
        return v

    _name_is_path_safe = field_validator("name")(path_safe_name)

    @model_validator(mode="after")
    def _fits_engine(self) -> RunConfig:
        g, sc = self.generator, self.scaling
        if g.backend == "vllm" and sc.gpus_per_actor and sc.gpus_per_actor < g.tensor_parallel_size:
            raise ValueError(
                f"scaling.gpus_per_actor ({sc.gpus_per_actor}) is below generator.tensor_parallel_size "
                f"({g.tensor_parallel_size}): each vLLM actor needs one GPU per tensor-parallel rank"
            )
        if self.mode == "specific":
            unnamed = sorted(t for t, w in self.task_mix.items() if w > 0 and t not in PROFILES[self.prompts.profile].tasks)
            if unnamed:
                raise ValueError(
                    f"task_mix: prompt profile {self.prompts.profile!r} has no task sentence for {unnamed} "
                    f"(it names {sorted(PROFILES[self.prompts.profile].tasks)})"
                )
        if self.sampling.max_tokens >= self.generator.max_model_len:
            raise ValueError(
                f"sampling.max_tokens ({self.sampling.max_tokens}) must be below "
                f"generator.max_model_len ({self.generator.max_model_len}) to leave room for the prompt"
            )
        return self
