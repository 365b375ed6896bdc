"""The image dedup stage: near-duplicate images left out before they are read (:mod:`genixer_ray.image_dedup`)."""

from __future__ import annotations

import functools

from genixer_ray.errors import skip
from genixer_ray.fingerprints import FINGERPRINT_COLUMNS
from genixer_ray.image_dedup import duplicates_name, fingerprints_name
from genixer_ray.store import RunStore


class DuplicateImageStage:
    """Mark the duplicates among a shard's planned rows (before they are read or decoded).

    Args:
        store_url: the run's folder, holding ``dedup/`` (:func:`~genixer_ray.image_dedup.cluster_images`).
        storage_options: fsspec options of that store.
    """

    name = "image_dedup"

    def __init__(self, store_url: str, storage_options: dict):
        self.store = RunStore(store_url, storage_options)

    @functools.lru_cache(maxsize=4)  # noqa: B019 (one stage per worker; a read task reads one shard)
    def _shard(self, shard: int) -> dict[str, dict]:
        name = duplicates_name(shard)
        if not self.store.fs.exists(self.store.path(name)):
            return {}
        dups = {r["image_id"]: r for r in self.store.read_frame(name).to_dicts()}
        prints = self.store.read_frame(fingerprints_name(shard)).to_dicts()
        return {r["image_id"]: dups[r["image_id"]] | {c: r[c] for c in FINGERPRINT_COLUMNS} for r in prints if r["image_id"] in dups}

    def _one(self, row: dict) -> dict:
        dup = self._shard(row["shard"]).get(row["image_id"])
        if dup is None or row.get("error_code"):
            return row
        row = {k: v for k, v in row.items() if k != "data"} | {c: dup[c] for c in FINGERPRINT_COLUMNS} | {"duplicate_of": dup["duplicate_of"]}
        return skip(row, self.name, "duplicate_image", f"a near-duplicate of {dup['duplicate_of']} ({dup['tier']}), generated once")

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Mark a batch's duplicates ``skipped``; every other row passes unchanged."""
        return [self._one(r) for r in batch]
