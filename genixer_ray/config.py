"""Typed run configuration: one YAML file describes a run, validated when it is loaded.

A config error names the dotted field and the bad value, before any work starts::

    ConfigError: generator.backend: Input should be 'vllm' or 'transformers' (got 'vlm')

The command line picks the file and overrides a few keys with ``key.sub=value`` pairs whose
values are parsed as YAML scalars (``sampling.temperature=0.2``, ``input.limit=null``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from genixer_ray.annotations import FORMATS
from genixer_ray.filters.policies import PAPER_BAND
from genixer_ray.models import check_model_spec
from genixer_ray.prompts import PROFILES, build_profile
from genixer_ray.tasks import TASKS

TASK_IDS = tuple(TASKS)


class ConfigError(ValueError):
    """A run configuration that cannot be used; the message names each bad field."""


class _Strict(BaseModel):
    # Unknown keys are errors: a typo such as `temprature` must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplingConfig(_Strict):
    """How the generator samples; recorded on every row as provenance."""

    temperature: float = Field(0.7, ge=0.0, le=5.0, description="0 is greedy; higher gives more varied questions and more parse failures.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus mass kept before sampling.")
    top_k: int = Field(0, ge=0, description="Sample among the k likeliest tokens only, before top_p (0: no limit).")
    max_tokens: int = Field(96, ge=1, le=8192, description="Generated tokens per sample; longer dialogues need more.")
    seed: int = Field(0, ge=0, description="Base seed; each row's seed is derived from it and the row so results repeat.")
    logprobs: int = Field(0, ge=0, le=20, description="How many top alternatives to keep per generated token (0: only the chosen token's logprob).")


def _path_safe_name(v: str) -> str:
    # A name becomes a folder on any store: keep it to characters every store accepts.
    if not all(c.isalnum() or c in "-_." for c in v) or v.startswith("."):
        raise ValueError("use letters, digits, '-', '_' and '.' only, not starting with '.'")
    return v


# One reference type per kind of model, checked by genixer_ray.models (paths must exist now).
ModelSpec = Annotated[str, AfterValidator(lambda v: check_model_spec(v, kind="generator"))]
ClipModelSpec = Annotated[str, AfterValidator(lambda v: check_model_spec(v, kind="clip"))]


class GeneratorConfig(_Strict):
    """Which model generates and how its engine is sized."""

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
    max_num_seqs: int = Field(64, ge=1, description="Sequences the engine decodes at once.")
    batch_size: int = Field(16, ge=1, description="Rows handed to the engine per call.")
    enforce_eager: bool = Field(False, description="Skip CUDA-graph capture: faster start, slower decode.")

    def memory_utilization(self, *, cpu: bool) -> float:
        """The memory share to give vLLM on this platform."""
        if self.gpu_memory_utilization is not None:
            return self.gpu_memory_utilization
        return 0.2 if cpu else 0.9


class InputConfig(_Strict):
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


class OutputConfig(_Strict):
    """Where results are written (any fsspec URL)."""

    path: str = Field("runs", description="Root under which the run's folder is created.")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="Passed to fsspec for the output (endpoint, credentials).")
    shard_size: int = Field(256, ge=1, le=1_000_000, description="Rows per output shard: the unit of commit and resume. Smaller loses less on a crash; larger makes fewer files.")


class ScalingConfig(_Strict):
    """How Ray runs the stages: actor counts for autoscaling, resources per actor and task."""

    ray_address: str | None = Field(None, description="Ray cluster to join ('auto' inside `ray job submit`); unset: start or reuse a local one.")
    min_actors: int = Field(1, ge=1, description="Generator actors kept alive; more cost idle accelerators.")
    max_actors: int = Field(1, ge=1, description="Generator actors Ray Data may scale up to while work is queued.")
    gpus_per_actor: float = Field(0.0, ge=0.0, description="Accelerators per generator actor (tensor_parallel_size of them for vLLM TP).")
    cpus_per_actor: float = Field(1.0, gt=0.0, description="CPUs reserved per generator actor.")
    actor_resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources each generator actor needs (pins actors to labelled nodes)."
    )
    max_tasks_in_flight_per_actor: int = Field(2, ge=1, description="Batches queued per actor: 2 keeps the engine fed while the next batch transfers.")
    decode_cpus: float = Field(0.5, gt=0.0, description="CPUs per decode task; fractional lets decode share small machines.")
    decode_batch_size: int = Field(16, ge=1, description="Images per decode task call.")
    actor_start_timeout_s: float = Field(1800.0, gt=0.0, description="How long to wait for an actor (a large vLLM engine) to start.")

class ClipFilterConfig(_Strict):
    """CLIP scores: each box's crop against its expression; the whole image for rows without boxes."""

    enabled: bool = Field(False, description="Score rows with CLIP (open_clip).")
    model: ClipModelSpec = Field("tiny", description="open_clip spec: 'ARCH/TAG' (ViT-B-32/laion2b_s34b_b79k), 'hf-hub:org/repo', a local directory, or 'tiny'.")
    score: Literal["cosine", "raw"] = Field(
        "cosine",
        description="Which score the threshold applies to: 'cosine' of L2-normalized features (clip_score, -1..1), or "
        "'raw', the paper's dot product of unnormalized features (clip_raw_score; Genixer kept ViT-L/14 crops above 60).",
    )
    threshold: float = Field(
        0.2,
        description="Minimum score: a cosine (matched pairs under ViT-B/32 typically 0.25-0.35), or with score=raw a dot product (the paper: 60).",
    )
    task_thresholds: dict[str, float] = Field(default_factory=dict, description="Task id -> threshold overriding `threshold` for that task.")
    min_box_side: float = Field(
        0.02, ge=0.0, lt=1.0, description="Boxes narrower or lower than this fraction of the image's side are rejected (box_too_small), not scored."
    )
    min_box_pixels: int = Field(
        0, ge=0, description="Boxes narrower or lower than this many pixels of the original image are rejected (box_too_small); the paper: 50."
    )
    batch_size: int = Field(64, ge=1, description="Crops per CLIP forward pass.")

    @field_validator("task_thresholds")
    @classmethod
    def _known(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(TASK_IDS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {list(TASK_IDS)}")
        return v

    @model_validator(mode="after")
    def _cosine_in_range(self) -> ClipFilterConfig:
        if self.score == "cosine" and not all(-1.0 <= t <= 1.0 for t in (self.threshold, *self.task_thresholds.values())):
            raise ValueError("filters.clip: a cosine threshold lies in [-1, 1] (set score: raw for the paper's dot product)")
        return self

    @property
    def score_column(self) -> str:
        """The column the threshold applies to."""
        return "clip_score" if self.score == "cosine" else "clip_raw_score"

    def threshold_for(self, task: str | None) -> float:
        """The threshold a row of ``task`` is judged by."""
        return self.task_thresholds.get(task or "", self.threshold)


class JudgeConfig(_Strict):
    """A vision-language judge's P(Yes) that the question-answer pair is true for the image."""

    enabled: bool = Field(False, description="Score rows with the judge.")
    model: ModelSpec | None = Field(None, description="The judge model (directory, hub id, 'tiny'); unset: the generator itself, on its own engine.")
    policy: Literal["threshold", "band", "top_fraction"] = Field(
        "band", description="'threshold': P(Yes) >= threshold; 'band': lo <= P(Yes) <= hi; 'top_fraction': the best fraction per task (within each shard)."
    )
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    band: tuple[float, float] = Field(PAPER_BAND, description="Genixer's finding: medium-probability samples (0.5-0.7) trained best.")
    fraction: float = Field(0.5, gt=0.0, le=1.0, description="top_fraction policy: share of each task's scored rows kept.")
    prompt: str = Field(
        "{qa}\nIs the answer to the question true for the image? Answer Yes or No.",
        description="The judge's question; {qa} becomes 'Question: ... Answer: ...' (all turns for dialogues).",
    )
    score: Literal["p_yes", "paper"] = Field(
        "p_yes",
        description="Which score the policy applies to: 'p_yes' (judge_p_yes, one greedy step) or 'paper' (judge_paper_score, "
        "the Genixer script's geometric mean of a sampled reply; a reply that does not say Yes is rejected).",
    )
    paper_score: bool = Field(
        False, description="Also compute judge_paper_score and judge_paper_reply (one sampled reply of up to 10 tokens per row); on with score=paper."
    )

    @property
    def wants_paper_score(self) -> bool:
        """Whether the paper's sampled score is computed."""
        return self.paper_score or self.score == "paper"

    @property
    def score_column(self) -> str:
        """The column the policy applies to."""
        return "judge_p_yes" if self.score == "p_yes" else "judge_paper_score"

    @field_validator("band")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= v[0] <= v[1] <= 1.0:
            raise ValueError("band must satisfy 0 <= lo <= hi <= 1")
        return v

    @field_validator("prompt")
    @classmethod
    def _has_slot(cls, v: str) -> str:
        if "{qa}" not in v:
            raise ValueError("the prompt must contain {qa}, where the question-answer pair goes")
        return v

    def rule(self) -> str:
        """The selection rule as recorded on each row (``band[0.5,0.7]``, ``threshold>=0.5``, ...)."""
        prefix = "paper " if self.score == "paper" else ""  # the paper's sampled score, not P(Yes)
        if self.policy == "band":
            return f"{prefix}band[{self.band[0]},{self.band[1]}]"
        if self.policy == "threshold":
            return f"{prefix}threshold>={self.threshold}"
        return f"{prefix}top_fraction={self.fraction}"


class ConsistencyConfig(_Strict):
    """Self-consistency: the generated question is answered again and the answers are compared."""

    enabled: bool = Field(False, description="Score rows by self-consistency.")
    model: ModelSpec | None = Field(None, description="Who answers again (directory, hub id, 'tiny'); unset: the generator itself.")
    samples: int = Field(3, ge=1, le=32, description="Answers sampled per question (k).")
    temperature: float = Field(0.7, ge=0.0, le=5.0, description="Sampling temperature of the re-answers (0: one greedy answer repeated).")
    max_tokens: int = Field(32, ge=1, le=1024, description="Tokens per re-answer.")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="Minimum mean agreement (letter match, box IoU or token F1) over the k answers.")


class FiltersConfig(_Strict):
    """Which filters score the rows, and the actors that run the ones needing their own model.

    Filters whose model is the generator run on the generator's actors (no second engine); CLIP
    and filters naming another model run on a pool of filter actors.
    """

    name: str = Field("default", min_length=1, max_length=128, description="A separate filter pass writes to {run}/filtered/{name}.")
    clip: ClipFilterConfig = Field(default_factory=ClipFilterConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    consistency: ConsistencyConfig = Field(default_factory=ConsistencyConfig)
    min_actors: int = Field(1, ge=1)
    max_actors: int = Field(1, ge=1)
    cpus_per_actor: float = Field(1.0, gt=0.0)
    gpus_per_actor: float = Field(0.0, ge=0.0, description="Accelerators per filter actor (CLIP fits beside others: 0.25 is common).")
    batch_size: int = Field(16, ge=1, description="Rows per filter actor call.")

    _name_is_path_safe = field_validator("name")(_path_safe_name)

    @model_validator(mode="after")
    def _actor_counts(self) -> FiltersConfig:
        if self.min_actors > self.max_actors:
            raise ValueError(f"filters.min_actors ({self.min_actors}) exceeds filters.max_actors ({self.max_actors})")
        return self

    def placement(self, *, filter_pass: bool = False) -> dict[str, str]:
        """Where each enabled filter runs, in the order they run: ``"generator"`` or ``"filter_actor"``.

        The one place this is decided. In a generation run, a judge or consistency check whose
        ``model`` is unset uses the generator's own engine, on the generator actor (no second
        engine); CLIP and the filters naming another model run on the filter actors. A filter pass
        has no generator actor: every filter runs on the filter actors, which build the generator's
        engine for the filters that use it.
        """
        out = {}
        for name, sub in (("consistency", self.consistency), ("judge", self.judge), ("clip", self.clip)):
            if sub.enabled:
                on_generator = not filter_pass and name != "clip" and sub.model is None
                out[name] = "generator" if on_generator else "filter_actor"
        return out

    @property
    def any_enabled(self) -> bool:
        """Whether any filter runs."""
        return bool(self.placement())

    @property
    def needs_filter_actor(self) -> bool:
        """Whether a generation run needs filter actors after its generator actors."""
        return "filter_actor" in self.placement().values()


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


class PromptsConfig(_Strict):
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


class RunConfig(_Strict):
    """One generation run."""

    name: str = Field("demo", min_length=1, max_length=128, description="Run id: names the output folder, so re-runs find their earlier output.")
    mode: Literal["agnostic", "specific"] = Field(
        "specific", description="'agnostic': generic instruction only, the model picks the task; 'specific': plus a task sentence from task_mix."
    )
    task_mix: dict[str, float] = Field(
        default_factory=lambda: {t: 1.0 for t in TASK_IDS},
        description="Task id -> relative weight for task-specific mode (ids: " + ", ".join(TASK_IDS) + ").",
    )
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    filters: FiltersConfig = Field(default_factory=FiltersConfig)

    @field_validator("task_mix")
    @classmethod
    def _known_tasks(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(TASK_IDS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {list(TASK_IDS)}")
        if any(w < 0 for w in v.values()) or not any(w > 0 for w in v.values()):
            raise ValueError("weights must be >= 0 with at least one > 0")
        return v

    _name_is_path_safe = field_validator("name")(_path_safe_name)

    @model_validator(mode="after")
    def _fits_engine(self) -> RunConfig:
        g, sc = self.generator, self.scaling
        if g.backend == "vllm" and sc.gpus_per_actor and sc.gpus_per_actor < g.tensor_parallel_size:
            raise ValueError(
                f"scaling.gpus_per_actor ({sc.gpus_per_actor}) is below generator.tensor_parallel_size "
                f"({g.tensor_parallel_size}): each vLLM actor needs one GPU per tensor-parallel rank"
            )
        if self.scaling.min_actors > self.scaling.max_actors:
            raise ValueError(f"scaling.min_actors ({self.scaling.min_actors}) exceeds scaling.max_actors ({self.scaling.max_actors})")
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


# -- training ---------------------------------------------------------------------------------


class DataSource(_Strict):
    """One annotation source in a published format, converted into generator training samples."""

    format: Literal[tuple(FORMATS)] = Field(description="The release's format (see the README's table and genixer_ray.annotations).")
    path: str | None = Field(None, description="The file of a one-file format (llava, gqa, aokvqa, rec_jsonl, pointqa, gpt4gen_*).")
    files: dict[str, str] = Field(
        default_factory=dict,
        description="The files of a several-file format by role: vqav2 {questions, annotations}; refer {refs, instances}; "
        "flickr30k {sentences, annotations (folders), index (optional: train.txt)}.",
    )
    image_root: str = Field(description="Folder the records' image names are relative to (any fsspec URL; 'fixtures/images/...': the bundled tree).")
    splits: list[str] = Field(default_factory=list, description="refer only: the splits to read (train, val, testA, ...); empty: all.")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for the files and their images.")

    @model_validator(mode="after")
    def _files_of_the_format(self) -> DataSource:
        spec = FORMATS[self.format]
        roles = self.file_roles()
        missing = [r for r in spec.files if r not in roles]
        unknown = sorted(set(roles) - set(spec.files) - set(spec.optional))
        if missing or unknown:
            wanted = "path" if spec.files == ("path",) else "files: {" + ", ".join(spec.files + tuple(f"{o} (optional)" for o in spec.optional)) + "}"
            raise ValueError(f"format {self.format!r} takes {wanted}; missing {missing}, unknown {unknown}")
        if self.splits and self.format != "refer":
            raise ValueError(f"splits apply to the refer format only, not {self.format!r}")
        return self

    def file_roles(self) -> dict[str, str]:
        """The source's files by role (``path`` counts as the role ``path``)."""
        return ({"path": self.path} if self.path else {}) | self.files


def _fixture_sources() -> list[DataSource]:
    # The bundled fixtures, one per published format, and the practice set (see fixtures/README.md).
    return [DataSource.model_validate(s) for s in FIXTURE_SOURCES + PRACTICE_SOURCES]


FIXTURE_SOURCES = [
    {"format": "llava", "path": "fixtures/llava/llava_v1_5_mix665k_sample.json", "image_root": "fixtures/images"},
    {"format": "vqav2", "files": {"questions": "fixtures/vqav2/v2_OpenEnded_mscoco_train2014_questions.json",
                                  "annotations": "fixtures/vqav2/v2_mscoco_train2014_annotations.json"},
     "image_root": "fixtures/images/coco/train2014"},
    {"format": "gqa", "path": "fixtures/gqa/train_balanced_questions.json", "image_root": "fixtures/images/gqa/images"},
    {"format": "aokvqa", "path": "fixtures/aokvqa/aokvqa_v1p0_train.json", "image_root": "fixtures/images/coco"},
    {"format": "refer", "files": {"refs": "fixtures/refcoco/refs(unc).p", "instances": "fixtures/refcoco/instances.json"},
     "image_root": "fixtures/images/coco/train2014"},
    {"format": "rec_jsonl", "path": "fixtures/shikra/REC_ref3_train.jsonl", "image_root": "fixtures/images/coco/train2014"},
    {"format": "pointqa", "path": "fixtures/shikra/pointQA_local_train.jsonl", "image_root": "fixtures/images/vg"},
    {"format": "flickr30k", "files": {"sentences": "fixtures/flickr30k_entities/Sentences",
                                      "annotations": "fixtures/flickr30k_entities/Annotations",
                                      "index": "fixtures/flickr30k_entities/train.txt"},
     "image_root": "fixtures/images/flickr30k"},
    {"format": "gpt4gen_qca", "path": "fixtures/shikra/GPT4GEN_BoxCoT_train.jsonl", "image_root": "fixtures/images/flickr30k"},
    {"format": "gpt4gen_rd", "path": "fixtures/shikra/GPT4GEN_RD_BoxCoT_train.jsonl", "image_root": "fixtures/images/flickr30k"},
]
# Answers not true for the images: it teaches the tiny generator the output format (Common VQA,
# Multi-choice VQA, REC, REG) in a couple of minutes on a CPU.
PRACTICE_SOURCES = [
    {"format": "gqa", "path": "fixtures/practice/gqa_practice_questions.json", "image_root": "fixtures/images/gqa/images"},
    {"format": "rec_jsonl", "path": "fixtures/practice/REC_practice.jsonl", "image_root": "fixtures/images/coco/train2014"},
    {"format": "aokvqa", "path": "fixtures/practice/aokvqa_practice.json", "image_root": "fixtures/images/coco"},
]


class TrainDataConfig(_Strict):
    """Which instruction data the generator learns from, and in what mix."""

    sources: list[DataSource] = Field(default_factory=_fixture_sources, min_length=1, description="Annotation files to convert.")
    specific_share: float = Field(0.5, ge=0.0, le=1.0, description="Share of samples given their task sentence (task-specific); the rest train task-agnostic generation.")
    task_weights: dict[str, float] = Field(default_factory=dict, description="Task id -> repetition weight (1: as converted, 0.5: half, 2: twice).")
    max_side: int = Field(672, ge=16, description="Images are downscaled to this longest side before the processor.")

    @field_validator("task_weights")
    @classmethod
    def _known(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(TASK_IDS))
        if unknown or any(w < 0 for w in v.values()):
            raise ValueError(f"unknown task(s) {unknown} or negative weight; known: {list(TASK_IDS)}")
        return v


class LoraConfig(_Strict):
    """LoRA adapters on the language model (peft) instead of training all its weights."""

    r: int = Field(16, ge=1, le=1024, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="Scaling numerator: the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1, description="Linear layers of the language model that get adapters (the vision tower never does).",
    )


class TrainModelConfig(_Strict):
    """The model being fine-tuned."""

    base: ModelSpec = Field("tiny", description="A LLaVA-architecture model directory, hub id, or 'tiny'.")
    freeze_vision: bool = Field(True, description="Keep the vision tower frozen (Genixer trains projector and language model).")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Training dtype; bfloat16 on GPUs.")
    lora: LoraConfig | None = Field(
        None, description="Train LoRA adapters on the language model (and the projector fully); unset: full fine-tuning. The export is merged."
    )


class OptimConfig(_Strict):
    """Optimizer and schedule."""

    lr: float = Field(3e-3, gt=0.0, description="Peak learning rate (AdamW); 3e-3 suits the tiny model, ~2e-5 real ones.")
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_steps: int = Field(10, ge=0, description="Linear warm-up steps before the constant rate.")
    batch_size: int = Field(8, ge=1, description="Samples per worker per step.")
    max_steps: int = Field(200, ge=1, description="Optimizer steps in all; a resumed run continues to this count.")
    grad_clip: float = Field(1.0, gt=0.0)


class TrainScalingConfig(_Strict):
    """Ray Train workers."""

    ray_address: str | None = Field(None, description="Ray cluster to join; unset: start or reuse a local one.")
    num_workers: int = Field(2, ge=1, description="Data-parallel workers (DDP).")
    use_gpu: bool = Field(False, description="One GPU per worker, NCCL; otherwise CPU and gloo.")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="'ddp': a full replica per worker; 'fsdp': weights, gradients and optimizer state sharded across workers (models too large to replicate)."
    )
    cpus_per_worker: float = Field(1.0, gt=0.0)
    max_failures: int = Field(2, ge=0, description="Worker-group restarts from the last checkpoint before the run fails.")


class TrainConfig(_Strict):
    """One fine-tuning run of a generator."""

    name: str = Field("genixer-tiny", min_length=1, max_length=128, description="Run name: with storage_path, what resume finds.")
    seed: int = Field(0, ge=0)
    data: TrainDataConfig = Field(default_factory=TrainDataConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    model: TrainModelConfig = Field(default_factory=TrainModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    scaling: TrainScalingConfig = Field(default_factory=TrainScalingConfig)
    storage_path: str = Field("runs/train", description="Where data, checkpoints and the export go (local path or s3://).")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for storage_path.")
    checkpoint_every: int = Field(50, ge=1, description="Steps between checkpoints; fewer lose less work on a failure.")
    keep_checkpoints: int = Field(2, ge=1)
    export_path: str | None = Field(None, description="Model directory for generation (default: {storage_path}/{name}/model).")

    _name_is_path_safe = field_validator("name")(_path_safe_name)

    @model_validator(mode="after")
    def _supported_combination(self) -> TrainConfig:
        if self.model.lora is not None and self.scaling.strategy == "fsdp":
            raise ValueError("model.lora with scaling.strategy=fsdp is not supported: LoRA trains few weights, use ddp")
        return self


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid run configuration ({source}):"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        # The value as given, its credentials masked (a misspelt storage_options key holds them too).
        name = str(e["loc"][-1]) if e["loc"] else ""
        got = redact({name: e["input"]})[name]
        lines.append(f"  {field}: {msg} (got {got!r})" if field != "<root>" else f"  {msg}")
    return "\n".join(lines)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``key.sub=value`` overrides applied (values parsed as YAML)."""
    out = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw else ""
    return out


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def build_config(
    data: dict[str, Any] | None = None, overrides: list[str] | None = None, *, source: str = "<dict>", kind: type[BaseModel] = RunConfig
):
    """Validate a config mapping (plus overrides) into a ``kind`` (:class:`RunConfig` by default).

    Args:
        data: the parsed mapping; ``None`` means all defaults (the embedded demo run).
        overrides: ``key.sub=value`` strings applied on top of ``data``.
        source: where ``data`` came from, for error messages.
        kind: the config class, :class:`RunConfig` or :class:`TrainConfig`.

    Raises:
        ConfigError: naming every bad field and its value.
    """
    merged = apply_overrides(data or {}, overrides or [])
    try:
        return kind.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None, *, kind: type[BaseModel] = RunConfig):
    """Load a YAML config of ``kind`` from ``path`` (``None``: the built-in defaults) and validate it."""
    if path is None:
        return build_config(None, overrides, source="defaults", kind=kind)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return build_config(data, overrides, source=str(p), kind=kind)


# Keys whose values are credentials wherever they appear (storage options are masked whole).
_SECRET_KEY = re.compile(r"secret|passw|token|credential|private_?key|access_?key|api_?key|session_?key|^key$|sas_|signature", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)


def redact(node: Any) -> Any:
    """``node`` with every credential masked as ``***``, at any depth of dicts and lists.

    Masked: every value under a ``storage_options`` key (its keys stay visible), the value of any
    key that names a secret (``secret``, ``password``, ``token``, ``key``, ...), and the user
    information of URLs (``s3://user:pass@bucket`` -> ``s3://***@bucket``).
    """
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if str(k).endswith("storage_options") and isinstance(v, dict):
                out[k] = {kk: "***" for kk in v}
            elif _SECRET_KEY.search(str(k)) and isinstance(v, str | bytes | int | float) and not isinstance(v, bool):
                out[k] = "***"
            else:
                out[k] = redact(v)
        return out
    if isinstance(node, list | tuple):
        return [redact(v) for v in node]
    if isinstance(node, str):
        return _URL_USERINFO.sub(r"\g<scheme>***@", node)
    return node


def redacted(cfg: BaseModel) -> dict[str, Any]:
    """``cfg`` as JSON-ready data with every credential masked (see :func:`redact`)."""
    return redact(cfg.model_dump(mode="json"))
