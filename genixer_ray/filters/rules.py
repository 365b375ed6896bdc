"""A filter's rule as data: which score it judged, how, and with what numbers.

The commit step records each rule it applied in the shard's marker (``rules``: these fields) and
on each row as text (``clip_rule``, ``judge_rule``: :attr:`Rule.text`, provenance a person
reads); ``inspect`` and the report read the fields, never the text back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from genixer_ray.config import ClipFilterConfig, ConsistencyConfig, DedupConfig, JudgeConfig


@dataclass(frozen=True)
class Rule:
    """One selection rule: ``filter`` kept rows whose ``score`` column met it."""

    filter: str  # "clip", "consistency" or "judge"
    score: str  # the column judged: clip_score, clip_raw_score, consistency_score, judge_p_yes, judge_paper_score
    # "threshold" (score >= low), "band" (low <= score <= high), "top_fraction" (the best fraction per
    # task) or "best_per_cluster" (dedup: the best of each near-duplicate cluster, low the Jaccard)
    policy: str
    low: float | None = None
    high: float | None = None
    fraction: float | None = None

    @property
    def text(self) -> str:
        """The rule as recorded on each row (``cosine>=0.2``, ``band[0.5,0.7]``, ``paper threshold>=0.5``, ...)."""
        if self.filter == "clip":
            return f"{'cosine' if self.score == 'clip_score' else 'raw'}>={self.low:g}"
        if self.filter == "dedup":
            return f"best {self.score} per question cluster (jaccard>={self.low:g})"
        prefix = "paper " if self.score == "judge_paper_score" else ""
        if self.policy == "band":
            return f"{prefix}band[{self.low},{self.high}]"
        if self.policy == "top_fraction":
            return f"{prefix}top_fraction={self.fraction}"
        return f"{prefix}threshold>={self.low}"

    @property
    def marks(self) -> list[float]:
        """Where a histogram of the score draws the rule: its threshold or band edges (none for dedup,
        whose ``low`` is a Jaccard similarity, not a score)."""
        return [] if self.filter == "dedup" else [v for v in (self.low, self.high) if v is not None]

    def as_dict(self) -> dict:
        """The rule's fields, JSON-ready (a marker's ``rules`` entries)."""
        return asdict(self)


def clip_rule(cfg: ClipFilterConfig, threshold: float) -> Rule:
    """CLIP's rule for a task judged by ``threshold``."""
    return Rule("clip", cfg.score_column, "threshold", low=threshold)


def consistency_rule(cfg: ConsistencyConfig) -> Rule:
    """Self-consistency's rule."""
    return Rule("consistency", "consistency_score", "threshold", low=cfg.threshold)


def judge_rule(cfg: JudgeConfig) -> Rule:
    """The judge's rule."""
    if cfg.policy == "band":
        return Rule("judge", cfg.score_column, "band", low=cfg.band[0], high=cfg.band[1])
    if cfg.policy == "top_fraction":
        return Rule("judge", cfg.score_column, "top_fraction", fraction=cfg.fraction)
    return Rule("judge", cfg.score_column, "threshold", low=cfg.threshold)


def dedup_rule(cfg: DedupConfig) -> Rule:
    """Sample dedup's rule: the best by ``cfg.score`` of each near-duplicate cluster of an image's samples."""
    return Rule("dedup", cfg.score, "best_per_cluster", low=cfg.jaccard)
