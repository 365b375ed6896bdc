"""The contamination stage: an image that matches an evaluation image is not generated on.

It runs on the read tasks right after decode (which fingerprints every image), so a contaminated
image never reaches the generator's actors: its row becomes ``status = "skipped"`` with code
``contaminated`` and the match's columns (tier, distance, benchmark, item), and the generate stage
passes it through as one row per requested sample, like an error row.
"""

from __future__ import annotations

import json

from genixer_ray.decontam.index import load_index
from genixer_ray.errors import skip


class ContaminationStage:
    """Match each decoded image against the run's evaluation index (:mod:`genixer_ray.decontam`).

    Args:
        store_url: the run's folder, which holds the index.
        index_name: the index file under it (``decontam/index-{digest}.npz``).
        storage_options: fsspec options of the run's store.
        radius: the largest Hamming distance that counts as a perceptual match.
    """

    name = "contamination"

    def __init__(self, store_url: str, index_name: str, storage_options: dict, radius: int):
        self.index = load_index(store_url, index_name, json.dumps(storage_options, sort_keys=True))
        self.radius = radius

    def _one(self, row: dict) -> dict:
        if row["status"] != "ok" or (match := self.index.match(row, self.radius)) is None:
            return row
        how = f"distance {match.distance}" if match.tier == "perceptual" else f"same {match.tier}"
        return skip(row | match.columns(), self.name, "contaminated", f"{match.benchmark} item {match.item} ({match.tier}, {how})")

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Mark the contaminated rows of a batch; every other row passes unchanged."""
        return [self._one(r) for r in batch]
