"""The fine-tuning run's config: data sources in published formats, model, optimizer, Ray Train."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from genixer_ray.annotations import FORMATS
from genixer_ray.config.base import ModelSpec, Strict, TaskWeights, path_safe_name
from genixer_ray.config.pools import ClusterConfig
from genixer_ray.config.run import PromptsConfig


class DataSource(Strict):
    """One annotation source in a published format, converted into generator training samples."""

    format: Literal[tuple(FORMATS)] = Field(description="The release's format (see docs/guide/annotations.md's table and genixer_ray.annotations).")
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


class TrainDataConfig(Strict):
    """Which instruction data the generator learns from, and in what mix."""

    sources: list[DataSource] = Field(default_factory=_fixture_sources, min_length=1, description="Annotation files to convert.")
    specific_share: float = Field(0.5, ge=0.0, le=1.0, description="Share of samples given their task sentence (task-specific); the rest train task-agnostic generation.")
    task_weights: TaskWeights = Field(default_factory=dict, description="Task id -> repetition weight (1: as converted, 0.5: half, 2: twice).")
    max_side: int = Field(672, ge=16, description="Images are downscaled to this longest side before the processor.")


class LoraConfig(Strict):
    """LoRA adapters on the language model (peft) instead of training all its weights."""

    r: int = Field(16, ge=1, le=1024, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="Scaling numerator: the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA adapters' inputs.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1, description="Linear layers of the language model that get adapters (the vision tower never does).",
    )


class TrainModelConfig(Strict):
    """The model being fine-tuned."""

    base: ModelSpec = Field("tiny", description="A LLaVA-architecture model directory, hub id, or 'tiny'.")
    freeze_vision: bool = Field(True, description="Keep the vision tower frozen (Genixer trains projector and language model).")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Training dtype; bfloat16 on GPUs.")
    lora: LoraConfig | None = Field(
        None, description="Train LoRA adapters on the language model (and the projector fully); unset: full fine-tuning. The export is merged."
    )


class OptimConfig(Strict):
    """Optimizer and schedule."""

    lr: float = Field(3e-3, gt=0.0, description="Peak learning rate (AdamW); 3e-3 suits the tiny model, ~2e-5 real ones.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW's decoupled weight decay.")
    warmup_steps: int = Field(10, ge=0, description="Linear warm-up steps before the constant rate.")
    batch_size: int = Field(8, ge=1, description="Samples per worker per step.")
    max_steps: int = Field(200, ge=1, description="Optimizer steps in all; a resumed run continues to this count.")
    grad_clip: float = Field(1.0, gt=0.0, description="Gradients are clipped to this global norm before each step.")


class TrainScalingConfig(Strict):
    """Ray Train workers."""

    num_workers: int = Field(2, ge=1, description="Data-parallel workers (DDP).")
    use_gpu: bool = Field(False, description="One GPU per worker, NCCL; otherwise CPU and gloo.")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="'ddp': a full replica per worker; 'fsdp': weights, gradients and optimizer state sharded across workers (models too large to replicate)."
    )
    cpus_per_worker: float = Field(1.0, gt=0.0, description="CPUs Ray reserves for each training worker.")
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources each worker needs (pins workers to labelled nodes, e.g. {trainer: 1})."
    )
    accelerator_type: str | None = Field(None, description="Only on nodes with this accelerator (Ray's label, e.g. A100, H100); with use_gpu.")
    max_failures: int = Field(2, ge=0, description="Worker-group restarts from the last checkpoint before the run fails.")

    @model_validator(mode="after")
    def _accelerator_needs_gpu(self) -> TrainScalingConfig:
        if self.accelerator_type and not self.use_gpu:
            raise ValueError(f"accelerator_type ({self.accelerator_type}) needs use_gpu: true")
        return self


class TrainConfig(Strict):
    """One fine-tuning run of a generator."""

    name: str = Field("genixer-tiny", min_length=1, max_length=128, description="Run name: with storage_path, what resume finds.")
    seed: int = Field(0, ge=0, description="Seeds the model's initialization of new weights and the epochs' order (same seed, same run).")
    data: TrainDataConfig = Field(default_factory=TrainDataConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    model: TrainModelConfig = Field(default_factory=TrainModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    scaling: TrainScalingConfig = Field(default_factory=TrainScalingConfig)
    ray: ClusterConfig = Field(default_factory=ClusterConfig)
    storage_path: str = Field("runs/train", description="Where data, checkpoints and the export go (local path or s3://).")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for storage_path.")
    checkpoint_every: int = Field(50, ge=1, description="Steps between checkpoints; fewer lose less work on a failure.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on storage (the newest); older ones are deleted.")
    export_path: str | None = Field(None, description="Model directory for generation (default: {storage_path}/{name}/model).")

    _name_is_path_safe = field_validator("name")(path_safe_name)

    @model_validator(mode="after")
    def _supported_combination(self) -> TrainConfig:
        if self.model.lora is not None and self.scaling.strategy == "fsdp":
            raise ValueError("model.lora with scaling.strategy=fsdp is not supported: LoRA trains few weights, use ddp")
        return self
