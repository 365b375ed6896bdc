"""The evaluation images' fingerprints, indexed once per run and matched against every run image.

Three tiers, tried in order: the file's bytes (SHA-256), the decoded pixels (XXH3-128), and the
perceptual hashes within a Hamming radius: a run image's ``phash`` against each evaluation image's
and its border crops' (:func:`~genixer_ray.fingerprints.index_hashes`), and its ``phash_center``
against theirs; the nearest wins. The perceptual tier is a vectorized scan (``np.bitwise_count``
over the 64-bit hashes): 64 bytes per evaluation image, about 1 ms per run image against 100,000
evaluation images (BENCHMARKS.md, "Fingerprints").

The index is built once per run by one Ray task and written to the run's store under
``decontam/index-{digest}.npz`` (``digest``: the sources' settings and their files' sizes and
modification stamps), with its counts in ``decontam/index-{digest}.json``; a re-run with the same
sources reuses it, and each read task loads it once per worker process.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from dataclasses import dataclass

import numpy as np

from genixer_ray.config.base import redacted
from genixer_ray.config.decontamination import DecontaminationConfig, EvalSource
from genixer_ray.fingerprints import INDEX_CROPS, fingerprint, index_hashes
from genixer_ray.images import DecodeError, decode_full

INDEX_FOLDER = "decontam"


@dataclass(frozen=True)
class Match:
    """A run image that matches an evaluation image: how, how close, and which."""

    tier: str  # "bytes", "pixels" or "perceptual"
    distance: int  # differing bits of the nearer perceptual hash (0 for the exact tiers)
    benchmark: str
    item: str

    def columns(self) -> dict:
        """The row columns of the match (``contamination_*``)."""
        return {"contamination_tier": self.tier, "contamination_distance": self.distance,
                "contamination_benchmark": self.benchmark, "contamination_item": self.item}


@dataclass
class EvalIndex:
    """Fingerprints of evaluation images (one entry per image; ``len(INDEX_CROPS)`` hashes each)."""

    benchmarks: np.ndarray  # str per image
    items: np.ndarray  # str per image
    image_sha256: np.ndarray  # str per image
    pixels_xxh3: np.ndarray  # str per image
    phash: np.ndarray  # uint64, (images, crops)
    phash_center: np.ndarray  # uint64, (images, crops)

    def __post_init__(self):
        self._bytes = {h: i for i, h in enumerate(self.image_sha256)}
        self._pixels = {h: i for i, h in enumerate(self.pixels_xxh3)}

    def __len__(self) -> int:
        return len(self.items)

    def _match(self, i: int, tier: str, distance: int) -> Match:
        return Match(tier, distance, str(self.benchmarks[i]), str(self.items[i]))

    def match(self, row: dict, radius: int) -> Match | None:
        """The evaluation image ``row``'s fingerprints match (its columns ``image_sha256``, ...), if any."""
        if (i := self._bytes.get(row["image_sha256"])) is not None:
            return self._match(i, "bytes", 0)
        if (i := self._pixels.get(row["pixels_xxh3"])) is not None:
            return self._match(i, "pixels", 0)
        if not len(self):
            return None
        full = np.bitwise_count(self.phash ^ np.uint64(row["phash"])).min(axis=1)
        center = np.bitwise_count(self.phash_center ^ np.uint64(row["phash_center"])).min(axis=1)
        nearest = np.minimum(full, center)
        i = int(nearest.argmin())
        return self._match(i, "perceptual", int(nearest[i])) if nearest[i] <= radius else None

    def to_bytes(self) -> bytes:
        """The index as an ``.npz`` file's bytes (no pickles)."""
        buf = io.BytesIO()
        np.savez(buf, **{k: getattr(self, k) for k in ("benchmarks", "items", "image_sha256", "pixels_xxh3", "phash", "phash_center")})
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> EvalIndex:
        """The index written by :meth:`to_bytes`."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(**{k: z[k] for k in z.files})


def build_index(cfg: DecontaminationConfig) -> tuple[EvalIndex, dict]:
    """Fingerprint every image of ``cfg.sources``; return the index and its counts per source.

    An image that does not decode is skipped and counted (its decode error's code).
    """
    from genixer_ray.annotations import SourceStats
    from genixer_ray.decontam.evalsets import iter_eval_images

    cols: dict[str, list] = {k: [] for k in ("benchmarks", "items", "image_sha256", "pixels_xxh3", "phash", "phash_center")}
    counts = []
    for src in cfg.sources:
        stats = SourceStats(src.benchmark)
        indexed = 0
        for item, data in iter_eval_images(src, stats):
            try:
                image = decode_full(data)
            except DecodeError as e:
                stats.skip(e.code, item, e.message)
                continue
            fp = fingerprint(data, image)
            hashes = index_hashes(image)
            for k, v in (("benchmarks", src.benchmark), ("items", item), ("image_sha256", fp.image_sha256), ("pixels_xxh3", fp.pixels_xxh3),
                         ("phash", [h for h, _ in hashes]), ("phash_center", [c for _, c in hashes])):
                cols[k].append(v)
            indexed += 1
        counts.append(stats.as_dict() | {"benchmark": src.benchmark, "images": indexed})
    shape = (len(cols["items"]), len(INDEX_CROPS))
    index = EvalIndex(
        benchmarks=np.array(cols["benchmarks"], dtype=str), items=np.array(cols["items"], dtype=str),
        image_sha256=np.array(cols["image_sha256"], dtype=str), pixels_xxh3=np.array(cols["pixels_xxh3"], dtype=str),
        phash=np.array(cols["phash"], dtype=np.uint64).reshape(shape), phash_center=np.array(cols["phash_center"], dtype=np.uint64).reshape(shape),
    )
    return index, {"sources": counts, "images": len(index)}


def sources_digest(cfg: DecontaminationConfig) -> str:
    """A digest of the sources' settings and of their files' sizes and modification stamps."""
    import fsspec

    h = hashlib.sha256(json.dumps(redacted(cfg), sort_keys=True).encode())
    for src in cfg.sources:
        for url in _files(src):
            try:
                fs, path = fsspec.core.url_to_fs(url, **src.storage_options)
                info = fs.info(path)
            except (OSError, ValueError):
                info = {}
            stamp = {k: str(info.get(k)) for k in ("size", "mtime", "LastModified", "ETag", "created")}
            h.update(json.dumps([url, stamp], sort_keys=True).encode())
    return h.hexdigest()[:16]


def _files(src: EvalSource) -> list[str]:
    return [u for u in [src.path, *src.files.values()] if u]


def ensure_index(store, cfg: DecontaminationConfig, *, build) -> tuple[str, dict]:
    """The run's index file for ``cfg`` (its name under the run's store) and its counts, built with
    ``build(cfg, store_url, storage_options, name)`` (a Ray task in a run) unless it exists."""
    digest = sources_digest(cfg)
    name = f"{INDEX_FOLDER}/index-{digest}"
    counts = store.read_json(f"{name}.json")
    if counts is None:
        counts = build(cfg, store.url, store.storage_options, name)
    return f"{name}.npz", counts


def build_and_write(cfg: DecontaminationConfig, store_url: str, storage_options: dict, name: str) -> dict:
    """Build the index and write it (``{name}.npz``, then ``{name}.json``, which marks it whole)."""
    from genixer_ray.store import RunStore

    store = RunStore(store_url, storage_options)
    index, counts = build_index(cfg)
    store.write_bytes(f"{name}.npz", index.to_bytes())
    store.write_json(f"{name}.json", counts)
    return counts


@functools.lru_cache(maxsize=4)
def load_index(store_url: str, name: str, options_json: str) -> EvalIndex:
    """This process's copy of the index ``name`` on the run's store (read once per process)."""
    from genixer_ray.store import RunStore

    store = RunStore(store_url, json.loads(options_json))
    return EvalIndex.from_bytes(store.read_bytes(name))
