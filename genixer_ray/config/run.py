"""The generation run's config: what is generated (mode, tasks, prompts, sampling), from what (input), where
to (output), by which components (engines, pools, ray), and what is done with the rows (filters,
decontamination, publish, views)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from genixer_ray.config.base import TASK_IDS, Strict, TaskWeights, Views, path_safe_name
from genixer_ray.config.decontamination import DecontaminationConfig
from genixer_ray.config.engines import EnginesConfig
from genixer_ray.config.filters import FiltersConfig
from genixer_ray.config.pools import PoolsConfig, RayConfig
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


class ImageDedupConfig(Strict):
    """Near-duplicate images generated once: the run's images clustered before generation (genixer_ray/image_dedup.py)."""

    enabled: bool = Field(
        False, description="Cluster the planned images by fingerprint first; only each cluster's largest image is generated on, the others "
        "are skipped (duplicate_image, duplicate_of naming it).",
    )
    radius: int = Field(
        4, ge=0, le=16,
        description="Perceptual near-duplicates: at most this many of the 64 bits of a perceptual hash differ (4: 98.3% of edited copies "
        "clustered with their original, no image merged with another photo's; BENCHMARKS.md, 'Image dedup'). Same file or pixels: always.",
    )


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
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    engines: EnginesConfig = Field(default_factory=EnginesConfig)
    pools: PoolsConfig = Field(default_factory=PoolsConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    decontamination: DecontaminationConfig = Field(default_factory=DecontaminationConfig)
    image_dedup: ImageDedupConfig = Field(default_factory=ImageDedupConfig)
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
        g, pool = self.engines.generator, self.pools.generator
        if g.backend == "vllm" and pool.gpus_per_actor and pool.gpus_per_actor < g.tensor_parallel_size:
            raise ValueError(
                f"pools.generator.gpus_per_actor ({pool.gpus_per_actor}) is below engines.generator.tensor_parallel_size "
                f"({g.tensor_parallel_size}): each vLLM actor needs one GPU per tensor-parallel rank"
            )
        if self.mode == "specific":
            unnamed = sorted(t for t, w in self.task_mix.items() if w > 0 and t not in PROFILES[self.prompts.profile].tasks)
            if unnamed:
                raise ValueError(
                    f"task_mix: prompt profile {self.prompts.profile!r} has no task sentence for {unnamed} "
                    f"(it names {sorted(PROFILES[self.prompts.profile].tasks)})"
                )
        if self.sampling.max_tokens >= g.max_model_len:
            raise ValueError(
                f"sampling.max_tokens ({self.sampling.max_tokens}) must be below "
                f"engines.generator.max_model_len ({g.max_model_len}) to leave room for the prompt"
            )
        return self
