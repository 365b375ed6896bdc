"""The contamination stages: images and questions that belong to an evaluation set.

:class:`ContaminationStage` runs on the read tasks right after decode (which fingerprints every
image). In a generation run a contaminated image never reaches the generator's actors: its row
becomes ``status = "skipped"`` with code ``contaminated`` and the match's columns (tier, distance,
benchmark, item), and the prompt stage passes it through as one row per requested sample, like
an error row. In a pass over an existing run (``skip_matches=False``) the generated row keeps its
status and gets the match's columns; the commit step rejects it (reason ``contaminated``).

:class:`QuestionStage` checks the generated questions (after parse, or as read back in a pass)
against the evaluation questions; a match is recorded the same way, unless the image matched first.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from genixer_ray.decontam.index import load_index
from genixer_ray.errors import skip
from genixer_ray.stages import row_image

if TYPE_CHECKING:
    from genixer_ray.config.decontamination import DecontaminationConfig


class ContaminationStage:
    """Match each decoded image against the run's evaluation index (:mod:`genixer_ray.decontam`).

    Args:
        store_url: the folder whose store holds the index (the run's, or the pass's).
        index_name: the index file under it (``decontam/index-{digest}.npz``).
        storage_options: fsspec options of that store.
        cfg: the run's (or pass's) decontamination settings: ``radius``, the largest Hamming distance
            that counts as a perceptual match; ``embedding_threshold``, the least cosine that counts
            as an embedding match, when the index holds embeddings (made with ``embedding_model``).
        skip_matches: mark a match ``skipped`` (before generation), else only record it.
    """

    name = "contamination"

    def __init__(self, store_url: str, index_name: str, storage_options: dict, cfg: DecontaminationConfig, skip_matches: bool = True):
        from genixer_ray.filters.clip import clip_scorer

        self.index = load_index(store_url, index_name, json.dumps(storage_options, sort_keys=True))
        self.cfg = cfg
        self.skip_matches = skip_matches
        model = self.index.embedded_with
        self.scorer = clip_scorer(model) if model else None  # the model the evaluation images were embedded with

    def _one(self, row: dict, match) -> dict:
        if match is None:
            return row
        row = row | match.columns()
        if not self.skip_matches:
            return row
        return skip(row, self.name, "contaminated", f"{match.benchmark} item {match.item} ({match.how()})")

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Mark the contaminated rows of a batch; every other row passes unchanged."""
        eligible = [k for k, r in enumerate(batch) if r["status"] == "ok" and r.get("phash") is not None]
        matches = dict(zip(eligible, self.index.match_images([batch[k] for k in eligible], self.cfg.radius), strict=True))
        if self.scorer is not None:  # the embedding tier, for the images no hash matched (decoded here: pixels in the row)
            rest = [k for k in eligible if matches[k] is None and batch[k].get("pixels") is not None]
            embeddings = self.scorer.embed([self.scorer.image_tensor(row_image(batch[k])) for k in rest])
            matches |= dict(zip(rest, self.index.match_embeddings(embeddings, self.cfg.embedding_threshold), strict=True))
        return [self._one(r, matches.get(k)) for k, r in enumerate(batch)]


class QuestionStage:
    """Record the evaluation question a generated question (or dialogue turn) repeats, if any.

    Args: as :class:`ContaminationStage`'s first three.
    """

    name = "question_contamination"

    def __init__(self, store_url: str, index_name: str, storage_options: dict):
        self.index = load_index(store_url, index_name, json.dumps(storage_options, sort_keys=True))

    def _one(self, row: dict) -> dict:
        if row["status"] != "ok" or row.get("contamination_tier") is not None:
            return row
        texts = [row["question"]] if row.get("question") else []
        texts += [t["question"] for t in row.get("turns") or [] if t.get("question")]
        match = self.index.match_text(texts)
        return row | match.columns() if match else row

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Record matches in a batch; every row passes, one out per row in."""
        return [self._one(r) for r in batch]
