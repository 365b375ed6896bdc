"""Selection policies over filter scores: which rows a filter keeps, and why the others were not.

Every function returns one decision per row, in order, and never drops a row: a row without a
score (its generation or parse failed, or the filter did not apply) is not kept, and says so.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

# Genixer found that samples whose judge score lies in the middle band trained downstream models
# best (samples the judge is sure of are too easy to teach much). Its score is the geometric mean of
# a sampled reply's token probabilities (judge_paper_score, JudgeConfig.score = "paper"); applied to
# P(Yes), the default score, the same band is this project's analogue, not the paper's finding.
PAPER_BAND = (0.5, 0.7)


def _valid(s: float | None) -> bool:
    return s is not None and not math.isnan(s)


def select_threshold(scores: Sequence[float | None], threshold: float) -> list[bool]:
    """Keep rows whose score is at least ``threshold``."""
    return [_valid(s) and s >= threshold for s in scores]


def select_band(scores: Sequence[float | None], lo: float, hi: float) -> list[bool]:
    """Keep rows whose score lies in ``[lo, hi]`` (both ends included); see :data:`PAPER_BAND`."""
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"band [{lo}, {hi}] must satisfy 0 <= lo <= hi <= 1")
    return [_valid(s) and lo <= s <= hi for s in scores]


def select_top_fraction(scores: Sequence[float | None], tasks: Sequence[str | None], fraction: float) -> list[bool]:
    """Keep, within each task, the ``ceil(fraction * n)`` best-scored of its ``n`` scored rows.

    Ties are broken by row order, so the choice is deterministic.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction {fraction} must lie in [0, 1]")
    by_task: dict[str | None, list[int]] = defaultdict(list)
    for i, (s, t) in enumerate(zip(scores, tasks, strict=True)):
        if _valid(s):
            by_task[t].append(i)
    keep = [False] * len(scores)
    for rows in by_task.values():
        rows.sort(key=lambda i: (-scores[i], i))
        for i in rows[: math.ceil(fraction * len(rows))]:
            keep[i] = True
    return keep
