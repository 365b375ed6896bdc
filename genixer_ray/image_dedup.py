"""Near-duplicate images of a run, generated once: clustered before generation, the others skipped.

A crawl holds the same picture many times (re-uploads, resizes, re-encodes, a watermark added).
With ``image_dedup.enabled`` a run clusters its planned images before it generates anything:

1. **Fingerprints**, a Ray Data task per plan shard: the shard's images decoded as generation
   decodes them (:class:`~genixer_ray.stages.decode.DecodeStage`, so the fingerprints are the ones
   its rows carry), written to ``dedup/fingerprints/shard-NNNNNN.parquet``; a shard whose file is
   there is not decoded again (a killed clustering resumes).
2. **Candidate keys** per image: its file's SHA-256, its pixels' hash, and the four 16-bit bands of
   each perceptual hash (``phash``, ``phash_center``, and the ``phash`` of its 3%, 6% and 9% border
   crops, so that a copy cropped by about that much lands near one of them). Two images within ``radius`` bits of each
   other share a band whenever at most 3 bits differ (pigeonhole), and in practice for most
   near-duplicates beyond that (BENCHMARKS.md, "Image dedup").
3. **Edges**, through Ray Data's groupby (on a hash partition of the keys): images that share an exact key are joined;
   images that share a band are joined when their hash of that band's kind is within ``radius``.
4. **Clusters**: connected components of the edges, in a Ray task (not the driver). Each cluster's
   representative is its largest image (most pixels), then its largest file (of two copies of one
   size, the less compressed: usually the original), then its smallest id; every other member is
   a duplicate, written per shard to ``dedup/images/shard-NNNNNN.parquet`` (only shards that hold
   duplicates). ``dedup/images.json`` is the marker: written last, it records the settings and the
   plan; a re-run with both unchanged reuses the clusters.

Generation then runs :class:`~genixer_ray.stages.image_dedup.DuplicateImageStage` first on the read tasks: a duplicate is not read,
decoded or generated on; it becomes one row per requested sample with status ``skipped``, code
``duplicate_image``, ``duplicate_of`` its representative's id and its fingerprints.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from genixer_ray.fingerprints import FINGERPRINT_COLUMNS, INDEX_CROPS, crop_margin, perceptual_hashes
from genixer_ray.store import RunStore

if TYPE_CHECKING:
    from genixer_ray.config import ImageDedupConfig, InputConfig


MARKER = "dedup/images.json"
BANDS = 4  # 16-bit bands of each 64-bit perceptual hash
PARTITIONS = 64  # of the candidate keys, for the groupby (each a map_groups call)
GROUP_CHUNK = 2048  # distinct hashes compared at once within a band group (bounds a group's memory)
TIERS = ("exact_bytes", "exact_pixels", "perceptual")  # strongest first
# A shard's fingerprint file: each planned image's fingerprints, its size, and the phash of its own
# border crops (CROPS), which a copy cut down by a few percent lands near (null where it did not decode).
FINGERPRINTS_SCHEMA = {"shard": pl.Int64, "image_id": pl.String, "area": pl.Int64, "file_bytes": pl.Int64, **FINGERPRINT_COLUMNS,
                       "crop_phashes": pl.List(pl.UInt64)}
CROPS = INDEX_CROPS[1:]  # the border shares cut off (the whole image's phash is already there)
_EXACT = {"s": "exact_bytes", "x": "exact_pixels"}  # key kind -> tier


def fingerprints_name(shard: int) -> str:
    """A plan shard's fingerprint file."""
    return f"dedup/fingerprints/shard-{shard:06d}.parquet"


def duplicates_name(shard: int) -> str:
    """A plan shard's duplicates file (absent: the shard holds none)."""
    return f"dedup/images/shard-{shard:06d}.parquet"


def keys_table(prints):
    """Each image's candidate keys, one row per (key, image): its file's and its pixels' hashes
    (``s:``, ``x:``) and each perceptual hash's 16-bit bands (``h0:``..``h3:`` of ``phash`` and of
    each border crop's, ``c0:``..``c3:`` of ``phash_center``), with the image's shard, area, file size, the
    hash a band's matches are checked by (0 for the exact keys) and the key's partition. ``prints``: a Polars frame of the fingerprint
    files' columns; images without fingerprints (not decodable) have no keys.
    """
    base = ["image_id", "shard", "area", "file_bytes"]
    parts = [
        prints.filter(pl.col(col).is_not_null()).select(*base, key=pl.concat_str(pl.lit(f"{kind}:"), pl.col(col)), hash=pl.lit(0, pl.UInt64))
        for kind, col in (("s", "image_sha256"), ("x", "pixels_xxh3"))
    ]
    # A border crop's phash is keyed as a whole image's is: a copy cropped by that share matches it.
    crops = prints.select(*base, "crop_phashes").explode("crop_phashes").rename({"crop_phashes": "crop_phash"})
    for kind, col, frame in (("h", "phash", prints), ("c", "phash_center", prints), ("h", "crop_phash", crops)):
        known = frame.filter(pl.col(col).is_not_null())
        parts += [
            known.select(*base, key=pl.concat_str(pl.lit(f"{kind}{b}:"), ((pl.col(col) // (1 << (16 * b))) % 65536).cast(pl.String)),
                         hash=pl.col(col))
            for b in range(BANDS)
        ]
    keys = pl.concat(parts)
    # The key's partition: Ray Data groups by it, so each call takes many keys (one call per key
    # cost more than the rest of the clustering); a key's images are all in one partition.
    return keys.select("key", *base, "hash", part=(pl.col("key").hash(seed=0) % PARTITIONS).cast(pl.Int32)).to_arrow()


def group_edges(key: str, ids: list[str], hashes: list[int], radius: int) -> list[tuple[str, str, str]]:
    """The edges ``(a, b, tier)`` among the images sharing ``key`` (``hashes``: their hash of the key's kind).

    Exact keys join every image to the first; a band joins the pairs within ``radius`` bits
    (identical hashes to the first of them, then the distinct hashes pairwise, in chunks).
    """
    kind = key[0]
    if kind in _EXACT:
        return [(ids[0], b, _EXACT[kind]) for b in ids[1:]]
    first: dict[int, str] = {}
    edges = []
    for i, h in zip(ids, hashes):
        if h in first:
            edges.append((first[h], i, "perceptual"))
        else:
            first[h] = i
    values = np.fromiter(first, dtype=np.uint64, count=len(first))
    names = list(first.values())
    for start in range(0, len(values), GROUP_CHUNK):
        block = values[start : start + GROUP_CHUNK]
        dist = np.bitwise_count(block[:, None] ^ values[None, :])
        rows, cols = np.nonzero(dist <= radius)
        edges += [(names[start + r], names[c], "perceptual") for r, c in zip(rows.tolist(), cols.tolist()) if start + r < c]
    return edges


def clusters(edges: list[tuple[str, str, str]], size: dict[str, tuple[int, int]]) -> dict[str, tuple[str, str]]:
    """Each duplicate's ``(representative, tier)``: connected components of ``edges``; the
    representative is a component's largest image (``size``: its pixels, then its file's bytes),
    then its smallest id; the tier is the strongest of the member's edges."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    tier: dict[str, str] = {}
    for a, b, t in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
        for x in (a, b):
            tier[x] = min(tier.get(x, t), t, key=TIERS.index)
    members: dict[str, list[str]] = {}
    for x in parent:
        members.setdefault(find(x), []).append(x)
    out = {}
    for group in members.values():
        rep = min(group, key=lambda x: (*(-v for v in size.get(x, (0, 0))), x))
        out.update({x: (rep, tier[x]) for x in group if x != rep})
    return out


def crop_phashes(image) -> list[int]:
    """The phash of each border crop (:data:`CROPS`) of a PIL ``image``."""
    return [perceptual_hashes(crop_margin(image, m))[0] for m in CROPS]


def _fingerprint_shards(batch, *, run_url: str, storage_options: dict, decode_cfg: InputConfig, chunk: int):
    """A Ray Data call over plan shards: each shard's fingerprints (from its file, else decoded
    ``chunk`` images at a time and written), as the keys table of its images (:func:`keys_table`)."""
    from PIL import Image

    from genixer_ray.stages import row_image
    from genixer_ray.stages.decode import DecodeStage

    # The decode stage hashes the full-resolution image; the crops' hashes are taken from the image
    # at max_side, not at the generator's short side (56 px for the tiny model), so that they
    # compare with the whole-image hashes as the benchmark's do.
    decode = DecodeStage(decode_cfg.model_copy(update={"short_side": None}))
    store = RunStore(run_url, storage_options)
    frames = []
    for shard in batch["shard"].to_pylist():
        name = fingerprints_name(shard)
        if not store.fs.exists(store.path(name)):
            plan, rows = store.read_frame(store.plan_name(shard)).to_dicts(), []
            for start in range(0, len(plan), chunk):  # a chunk's decoded images in memory at a time
                planned = [_with_bytes(r, decode) for r in plan[start : start + chunk]]
                rows += [
                    {"shard": shard, "image_id": r["image_id"], "area": (r.get("image_width") or 0) * (r.get("image_height") or 0),
                     "file_bytes": len(p["data"]) if p.get("data") is not None else None}
                    | {c: r.get(c) for c in FINGERPRINT_COLUMNS}
                    | {"crop_phashes": crop_phashes(Image.fromarray(row_image(r))) if r["status"] == "ok" else None}
                    for p, r in zip(planned, decode(planned), strict=True)
                ]
            store.write_frame(name, pl.DataFrame(rows, schema=FINGERPRINTS_SCHEMA))
        frame = store.read_frame(name)
        # (a file written before file sizes were recorded: ties between equal-sized copies go by id)
        frames.append(frame if "file_bytes" in frame.columns else frame.with_columns(file_bytes=pl.lit(None, pl.Int64)))
    return keys_table(pl.concat(frames))


def _with_bytes(row: dict, decode) -> dict:
    # A planned row with its file's bytes inline (the decode stage then reads nothing), so that the
    # file's size is known; a file that cannot be read is left to the decode stage, which says why.
    if row.get("data") is not None or row.get("error_code"):
        return row
    try:
        return row | {"data": decode.read(row["source"])}
    except Exception:
        return row


_EDGES = (("a", "string"), ("b", "string"), ("tier", "string"), ("a_shard", "int64"), ("b_shard", "int64"), ("a_area", "int64"),
          ("b_area", "int64"), ("a_bytes", "int64"), ("b_bytes", "int64"))


def _edges_of_partition(part, *, radius: int):
    """Ray Data's ``map_groups`` call: one partition's keys -> the edges of every key shared by
    several images, with each end's shard, area and file size."""
    import pyarrow as pa

    keys = pl.from_arrow(part)
    shared = keys.filter(pl.len().over("key") > 1)
    at = {i: rest for i, *rest in shared.select("image_id", "shard", "area", "file_bytes").iter_rows()}
    rows = []
    for (key,), group in shared.group_by("key"):
        for a, b, t in group_edges(key, group["image_id"].to_list(), group["hash"].to_list(), radius):
            rows.append({"a": a, "b": b, "tier": t, "a_shard": at[a][0], "b_shard": at[b][0], "a_area": at[a][1], "b_area": at[b][1],
                         "a_bytes": at[a][2], "b_bytes": at[b][2]})
    return pa.Table.from_pylist(rows, schema=pa.schema([(n, getattr(pa, t)()) for n, t in _EDGES]))


def _settings(cfg: ImageDedupConfig, plan: dict, decode_cfg: InputConfig) -> dict:
    return {"radius": cfg.radius, "shards": plan["shards"], "rows": plan["rows"], "max_side": decode_cfg.max_side,
            "max_pixels": decode_cfg.max_pixels, "bands": BANDS}


def duplicate_edges(keys, radius: int):
    """The edges among images (a Ray dataset of :func:`keys_table` rows): Ray Data's groupby on
    the keys' partition, each shared key's edges by :func:`group_edges`."""
    return keys.groupby("part").map_groups(functools.partial(_edges_of_partition, radius=radius), batch_format="pyarrow")


def find_duplicates(edges) -> tuple[dict[str, tuple[str, str]], dict[str, int]]:
    """The duplicates among the ``edges`` (a Ray dataset), each with its ``(representative, tier)``
    (:func:`clusters`), and the shard of every image in an edge."""
    found, size, shard_of = [], {}, {}
    for batch in edges.iter_batches(batch_format="pyarrow"):
        for r in batch.to_pylist():
            found.append((r["a"], r["b"], r["tier"]))
            size[r["a"]], size[r["b"]] = (r["a_area"], r["a_bytes"] or 0), (r["b_area"], r["b_bytes"] or 0)
            shard_of[r["a"]], shard_of[r["b"]] = r["a_shard"], r["b_shard"]
    return clusters(found, size), shard_of


def cluster_images(run_url: str, storage_options: dict, cfg: ImageDedupConfig, plan: dict, decode_cfg: InputConfig, pool) -> dict:
    """Cluster the run's planned images (reusing a finished clustering of the same plan and settings);
    returns the marker: counts of duplicates and clusters.

    Runs on Ray Data (a task per shard, as many at once as ``pool``, the run's read tasks; then a
    groupby on the candidate keys) and in a Ray task for the components; call it where Ray is up.
    """
    import ray

    store = RunStore(run_url, storage_options)
    wanted = _settings(cfg, plan, decode_cfg)
    marker = store.read_json(MARKER)
    if marker is not None and marker.get("settings") == wanted:
        return marker
    shards = ray.data.from_items([{"shard": k} for k in range(plan["shards"])], override_num_blocks=max(1, plan["shards"]))
    keys = shards.map_batches(
        _fingerprint_shards, batch_size=1, batch_format="pyarrow", num_cpus=pool.task_cpus,
        concurrency=pool.max_tasks, fn_kwargs={"run_url": run_url, "storage_options": storage_options, "decode_cfg": decode_cfg, "chunk": pool.batch_size},
    )
    return ray.get(ray.remote(num_cpus=1)(_write_clusters).remote(run_url, storage_options, duplicate_edges(keys, cfg.radius), wanted))


def _write_clusters(run_url: str, storage_options: dict, edges, settings: dict) -> dict:
    """The duplicates among ``edges`` written per shard, stale shard files removed, then the marker."""
    store = RunStore(run_url, storage_options)
    dups, shard_of = find_duplicates(edges)
    by_shard: dict[int, list[dict]] = {}
    for i, (rep, tier) in sorted(dups.items()):
        by_shard.setdefault(shard_of[i], []).append({"image_id": i, "duplicate_of": rep, "tier": tier})
    for name in store.relative_names():
        if name.startswith("dedup/images/shard-") and int(name.removesuffix(".parquet").rsplit("-", 1)[1]) not in by_shard:
            store.fs.rm(store.path(name))  # a clustering with other settings left it
    for k, rows in by_shard.items():
        store.write_frame(duplicates_name(k), pl.DataFrame(rows, schema={"image_id": pl.String, "duplicate_of": pl.String, "tier": pl.String}))
    tiers = [t for _, t in dups.values()]
    marker = {"settings": settings, "duplicates": len(dups), "clusters": len({r for r, _ in dups.values()}),
              "by_tier": {t: tiers.count(t) for t in TIERS if t in tiers}}
    store.write_json(MARKER, marker)
    return marker


def saved(marker: dict | None, seconds_per_row: float | None, samples_per_image: int) -> dict | None:
    """What image dedup saved: the requests not sent to the generator, and the generator time they
    would have taken at this run's measured rate (wall seconds per generated row)."""
    if not marker:
        return None
    requests = marker["duplicates"] * samples_per_image
    out = {"duplicate_images": marker["duplicates"], "clusters": marker["clusters"], "by_tier": marker["by_tier"], "requests_avoided": requests}
    if seconds_per_row:
        out["generator_seconds_saved"] = round(requests * seconds_per_row, 1)
    return out


def image_dedup_text(saved: dict) -> str:
    """``3 duplicate images in 3 clusters (exact_bytes=1, ...): 6 generator requests avoided, about 12.5 s`` for people."""
    tiers = ", ".join(f"{t}={n}" for t, n in saved["by_tier"].items()) or "none"
    seconds = f", about {saved['generator_seconds_saved']:g} s of generator time at this run's rate" if "generator_seconds_saved" in saved else ""
    return (f"{saved['duplicate_images']} duplicate images in {saved['clusters']} clusters ({tiers}): "
            f"{saved['requests_avoided']} generator requests avoided{seconds}")
