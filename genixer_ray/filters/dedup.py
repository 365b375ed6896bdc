"""Near-duplicate samples of one image: the best of each cluster is kept, the others rejected.

A fine-tuned generator asked several times about one image (``samples_per_image``) repeats
itself. Two parsed samples of the same image are near-duplicates when their questions, normalized
as decontamination and diversity normalize them (:func:`~genixer_ray.decontam.index.normalize_text`),
share at least ``jaccard`` of their character 3-grams (exactly computed: an image has at most 64
samples), and their answers agree where the task says how: every answer box overlapping its
counterpart by ``iou`` or more (grounding answers), the same option letter (multi-choice). Clusters
are the connected components of that relation. Of each cluster the best row is kept: first one
the other filters kept, then the highest ``score``, then the lowest sample number (so ties break
the same way on every machine and in any order of the rows); the others get ``dedup_reason =
"duplicate_sample"`` and ``duplicate_of``, the kept sample's id.

An image's samples are generated together and committed in one shard, so this runs in the commit
step of a run or of a filter pass, with no model and no extra pass over the data.
"""

from __future__ import annotations

from itertools import combinations

from genixer_ray.config import DedupConfig
from genixer_ray.decontam.index import normalize_text
from genixer_ray.filters.consistency import box_iou
from genixer_ray.question_clusters import connected_components, jaccard, shingles
from genixer_ray.schema import row_key
from genixer_ray.seeding import sample_id

# Questions are compared on their first characters only: a generated question of a megabyte
# (hostile or runaway output) costs no more than a long real one.
MAX_CHARS = 2000


def question_grams(question: str | None) -> frozenset[str]:
    """The character 3-grams of a normalized question (its first :data:`MAX_CHARS` characters)."""
    return frozenset(shingles(normalize_text(question or "")[:MAX_CHARS]))


def same_answer(a: dict, b: dict, iou: float) -> bool:
    """Whether two samples' answers agree where their task says how: boxes (each pair in order
    overlapping at least ``iou``), an option letter; other answers are not compared."""
    boxes_a, boxes_b = a.get("answer_boxes") or [], b.get("answer_boxes") or []
    if boxes_a or boxes_b:
        return len(boxes_a) == len(boxes_b) and all(box_iou(x, y) >= iou for x, y in zip(boxes_a, boxes_b, strict=True))
    if a.get("answer_letter") or b.get("answer_letter"):
        return a.get("answer_letter") == b.get("answer_letter")
    return True


def _rank(row: dict, score: str) -> tuple:
    """Sort key of the best row of a cluster first: kept by the other filters, higher score, lower sample."""
    rejected = any(row.get(f"{f}_pass") is False for f in ("clip", "consistency", "judge"))
    value = row.get(score)
    return (rejected, value is None, -(value or 0.0), row_key(row)[1])


def decide_dedup(rows: list[dict], cfg: DedupConfig) -> None:
    """Set ``dedup_pass`` (and for duplicates ``dedup_reason``, ``duplicate_of``) on every parsed row, in place."""
    by_image: dict[str, list[dict]] = {}
    for r in rows:
        if r["status"] == "ok":
            by_image.setdefault(r["image_id"], []).append(r)
    for samples in by_image.values():
        samples.sort(key=lambda r: row_key(r)[1])  # the order the rows came in never matters
        grams = [question_grams(r.get("question")) for r in samples]
        pairs = [
            (i, j) for i, j in combinations(range(len(samples)), 2)
            if jaccard(grams[i], grams[j]) >= cfg.jaccard and same_answer(samples[i], samples[j], cfg.iou)
        ]
        clusters: dict[int, list[dict]] = {}
        for r, label in zip(samples, connected_components(len(samples), pairs), strict=True):
            clusters.setdefault(label, []).append(r)
        for members in clusters.values():
            best, *others = sorted(members, key=lambda r: _rank(r, cfg.score))
            best |= {"dedup_pass": True, "dedup_reason": None, "duplicate_of": None}
            for r in others:
                r |= {"dedup_pass": False, "dedup_reason": "duplicate_sample", "duplicate_of": sample_id(*row_key(best))}
