"""Decontamination's config: the evaluation sets a run must not generate on, and how close counts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from genixer_ray.annotations import FORMATS
from genixer_ray.config.base import ClipModelSpec, Strict, path_safe_name

# Besides every annotation format the converters read: VLMEvalKit's TSV (base64 images), Parquet
# with an image column of {bytes, path} structs (the `datasets` / lmms-eval layout), and images
# (a folder or a manifest, as input.source takes them).
EVAL_FORMATS = ("vlmevalkit_tsv", "parquet", "images", *FORMATS)


class EvalSource(Strict):
    """One evaluation set, in the form its users have it."""

    benchmark: str = Field(min_length=1, max_length=128, description="The benchmark's name, recorded on every match (e.g. MMBench_DEV_EN).")
    format: Literal[EVAL_FORMATS] = Field(
        description="'vlmevalkit_tsv' (VLMEvalKit's TSV: index, base64 image, ...), 'parquet' (an image column of "
        "{bytes, path} structs), 'images' (a folder or a .jsonl/.csv/.parquet manifest), or an annotation format "
        "the converters read (vqav2, gqa, refer, aokvqa, flickr30k, rec_jsonl, llava, ...) with its image_root.",
    )
    path: str | None = Field(None, description="The file (a TSV, a Parquet file or folder, a one-file annotation format) or image folder/manifest.")
    files: dict[str, str] = Field(
        default_factory=dict, description="The files of a several-file annotation format by role (vqav2, refer, flickr30k); vqav2 "
        "also takes its questions file alone (test, test-dev).",
    )
    image_root: str | None = Field(
        None, description="Annotation formats: the folder their image names are relative to; vlmevalkit_tsv: where rows without "
        "an image column's bytes find their image_path.",
    )
    image_column: str = Field("image", description="parquet: the column of image structs ({bytes, path}) or of image bytes.")
    splits: list[str] = Field(default_factory=list, description="refer only: the splits to read (testA, testB, val, ...); empty: all.")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for the files and their images.")

    _benchmark_is_path_safe = field_validator("benchmark")(path_safe_name)

    @model_validator(mode="after")
    def _files_of_the_format(self) -> EvalSource:
        if self.format in FORMATS:
            from genixer_ray.config.train import DataSource

            if not (self.format == "vqav2" and set(self.files) == {"questions"} and self.path is None):
                # (a VQAv2 questions file alone is an evaluation set: test and test-dev have no annotations)
                DataSource(format=self.format, path=self.path, files=self.files, image_root=self.image_root or "", splits=self.splits)
            if self.image_root is None:
                raise ValueError(f"format {self.format!r} needs image_root (the folder its image names are relative to)")
        elif self.path is None or self.files:
            raise ValueError(f"format {self.format!r} takes path (and no files)")
        return self


class DecontaminationConfig(Strict):
    """Benchmark images kept out of a run: fingerprints matched against evaluation sets before generation."""

    enabled: bool = Field(False, description="Match every image against the evaluation sets; a match is not generated on.")
    sources: list[EvalSource] = Field(default_factory=list, description="The evaluation sets (see EvalSource).")
    radius: int = Field(
        8, ge=0, le=24,
        description="Perceptual matches: at most this many of the 64 bits differ (8: 99.4% of edited copies found, 0.09% "
        "of other images matched; BENCHMARKS.md, 'Fingerprints').",
    )
    mirrored: bool = Field(
        False,
        description="Also match copies flipped left to right (tier 'mirrored'): each evaluation image is indexed flipped "
        "too, which doubles the perceptual index and the images it can wrongly match (BENCHMARKS.md, 'Fingerprints').",
    )
    embedding_model: ClipModelSpec | None = Field(
        None,
        description="An open_clip spec (the run's filters.clip.model: no other weights are needed): images the hashes do "
        "not match are also matched by the cosine of their CLIP image embeddings (tier 'embedding'), for copies cropped or "
        "changed more than the hashes allow. Costs a CLIP forward pass per image in the read tasks (BENCHMARKS.md, "
        "'Fingerprints'). Unset: no embedding tier.",
    )
    embedding_threshold: float = Field(
        0.95, gt=0.0, le=1.0,
        description="Embedding matches: a cosine at least this (0.95: near-duplicates for a trained CLIP; not measured "
        "here, where only a randomly initialized CLIP can be built: check it on your model).",
    )

    @model_validator(mode="after")
    def _sources_when_enabled(self) -> DecontaminationConfig:
        if self.enabled and not self.sources:
            raise ValueError("enabled needs at least one evaluation set in sources")
        return self
