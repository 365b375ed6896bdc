"""The filters' configs: what each filter asks and the thresholds it keeps rows by.

Their models are engines (``engines.judge``, ...: :mod:`genixer_ray.config.engines`) and their actors
a pool (``pools.filters``); where each filter runs is decided in :mod:`genixer_ray.stages.filters`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from genixer_ray.config.base import ClipModelSpec, Strict, TaskIdMap
from genixer_ray.filters.policies import PAPER_BAND
from genixer_ray.schema import RATING_AXES

# The scores that rank samples of one cluster (the best first): sample dedup's and publish's cluster cap.
SampleScore = Literal["judge_p_yes", "judge_paper_score", "clip_score", "consistency_score"]


class ClipFilterConfig(Strict):
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
    task_thresholds: TaskIdMap = Field(default_factory=dict, description="Task id -> threshold overriding `threshold` for that task.")
    min_box_side: float = Field(
        0.02, ge=0.0, lt=1.0, description="Boxes narrower or lower than this fraction of the image's side are rejected (box_too_small), not scored."
    )
    min_box_pixels: int = Field(
        0, ge=0, description="Boxes narrower or lower than this many pixels of the original image are rejected (box_too_small); the paper: 50."
    )
    batch_size: int = Field(64, ge=1, description="Crops per CLIP forward pass.")

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


class JudgeConfig(Strict):
    """A vision-language judge's P(Yes) that the question-answer pair is true for the image."""

    enabled: bool = Field(False, description="Score rows with the judge.")
    policy: Literal["threshold", "band", "top_fraction"] = Field(
        "band", description="'threshold': P(Yes) >= threshold; 'band': lo <= P(Yes) <= hi; 'top_fraction': the best fraction per task (within each shard)."
    )
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="threshold policy: the least score kept.")
    band: tuple[float, float] = Field(
        PAPER_BAND,
        description="Genixer's finding: samples of medium judge score (0.5-0.7; its score is score=paper's) trained best.",
    )
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


class ConsistencyConfig(Strict):
    """Self-consistency: the generated question is answered again and the answers are compared."""

    enabled: bool = Field(False, description="Score rows by self-consistency.")
    samples: int = Field(3, ge=1, le=32, description="Answers sampled per question (k).")
    temperature: float = Field(0.7, ge=0.0, le=5.0, description="Sampling temperature of the re-answers (0: one greedy answer repeated).")
    max_tokens: int = Field(32, ge=1, le=1024, description="Tokens per re-answer.")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="Minimum mean agreement (letter match, box IoU or token F1) over the k answers.")


class RatingConfig(Strict):
    """Rating each parsed sample on several axes from 1 to 5, one decode step per axis (genixer_ray/filters/rating.py)."""

    enabled: bool = Field(False, description="Rate every parsed row on the axes (rating_{axis} and rating_{axis}_confidence columns).")
    axes: list[Literal[RATING_AXES]] = Field(
        default_factory=lambda: list(RATING_AXES), min_length=1,
        description="The axes asked; grounding only of rows with boxes or points.",
    )
    prompts: dict[Literal[RATING_AXES], str] = Field(
        default_factory=dict, description="An axis's question instead of the built-in one (it is asked after the image and the sample).",
    )
    collapse_share: float = Field(
        0.95, gt=0.0, le=1.0, description="Alarm when one rating (rounded) holds at least this share of a shard's rated rows on an axis.",
    )
    min_confidence: float = Field(0.5, ge=0.0, le=1.0, description="Alarm when an axis's mean confidence in a shard falls below this.")
    alarm_min_rows: int = Field(20, ge=1, description="Rated rows a shard needs before its alarms are raised (fewer say too little).")

    @field_validator("axes")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("an axis is named twice")
        return v


class DedupConfig(Strict):
    """Near-duplicate samples of one image: the best of each cluster is kept, the others rejected."""

    enabled: bool = Field(False, description="Reject samples that nearly repeat a better sample of the same image (duplicate_sample).")
    jaccard: float = Field(
        0.7, ge=0.3, le=1.0,
        description="Questions (normalized) whose character 3-grams overlap at least this much are near-duplicates (diversity's measure).",
    )
    iou: float = Field(0.7, ge=0.0, le=1.0, description="Grounding answers are the same when every box overlaps its counterpart at least this much.")
    score: SampleScore = Field(
        "judge_p_yes", description="The best of a cluster: highest by this score (rows the other filters kept first; then the lower sample).",
    )


class FiltersConfig(Strict):
    """Which filters score the rows, and their thresholds (their engines: ``engines``; their actors: ``pools.filters``)."""

    clip: ClipFilterConfig = Field(default_factory=ClipFilterConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    consistency: ConsistencyConfig = Field(default_factory=ConsistencyConfig)
    rating: RatingConfig = Field(default_factory=RatingConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)

    def enabled(self) -> list[str]:
        """The scoring filters that run, in the order they run (sample dedup runs where rows are committed)."""
        return [n for n in ("consistency", "judge", "rating", "clip") if getattr(self, n).enabled]

    @property
    def any_enabled(self) -> bool:
        """Whether any filter runs, sample dedup included."""
        return bool(self.enabled()) or self.dedup.enabled
