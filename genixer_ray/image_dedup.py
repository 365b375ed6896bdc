"""Near-duplicate images of a run, generated once: clustered before generation, the others skipped.

A crawl holds the same picture many times (re-uploads, resizes, re-encodes, a watermark added).
With ``image_dedup.enabled`` a run clusters its planned images before it generates anything:

1. **Fingerprints**, a Ray Data task per plan shard: the shard's images decoded as generation
   decodes them (:class:`~genixer_ray.stages.decode.DecodeStage`, so the fingerprints are the ones
   its rows carry), written to ``dedup/fingerprints/shard-NNNNNN.parquet``; a shard whose file is
   there is not decoded again (a killed clustering resumes).
2. **Candidate keys** per image: the four 16-bit bands of each perceptual hash (``phash``,
   ``phash_center``, and the ``phash`` of its 3%, 6% and 9% border crops, so that a copy cropped by
   about that much lands near one of them). Two images within ``radius`` bits of each other share a
   band whenever at most 3 bits differ (pigeonhole), and in practice for most near-duplicates
   beyond that (BENCHMARKS.md, "Image dedup"); the same file or the same pixels give the same
   hashes, so exact copies share every band. A key row is 19 bytes of integers: its kind (which
   band of which hash), the hash, the image as ``shard << 32 | row``, its partition.
3. **Edges**, through Ray Data's groupby (on a hash partition of the keys): images that share a
   band are joined when their hashes of that kind are within ``radius`` bits
   (:func:`~genixer_ray.hamming.pairs_within`, compiled: a band holds tens of images at a
   million). An edge's tier is then its images' strongest likeness: the same file (SHA-256), the
   same pixels, else perceptual.
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

from genixer_ray.fingerprints import FINGERPRINT_COLUMNS, FINGERPRINT_VERSION, crop_phashes
from genixer_ray.store import RunStore

if TYPE_CHECKING:
    from genixer_ray.config import ImageDedupConfig, InputConfig


MARKER = "dedup/images.json"
BANDS = 4  # 16-bit bands of each 64-bit perceptual hash
PARTITIONS = 64  # of the candidate keys, for the groupby (each a map_groups call)
TIERS = ("exact_bytes", "exact_pixels", "perceptual")  # strongest first
# A shard's fingerprint file: each planned image's fingerprints, its size, and the phash of its own
# border crops (fingerprints.crop_phashes), which a copy cut down by a few percent lands near (null
# where it did not decode).
FINGERPRINTS_SCHEMA = {"shard": pl.Int64, "image_id": pl.String, "area": pl.Int64, "file_bytes": pl.Int64, **FINGERPRINT_COLUMNS,
                       "crop_phashes": pl.List(pl.UInt64)}
EDGES_SCHEMA = {"a": pl.Int64, "b": pl.Int64}
_ROW_BITS = 32  # an image's ref: its shard << 32 | its row in the shard's fingerprint file


def fingerprints_name(shard: int) -> str:
    """A plan shard's fingerprint file."""
    return f"dedup/fingerprints/shard-{shard:06d}.parquet"


def duplicates_name(shard: int) -> str:
    """A plan shard's duplicates file (absent: the shard holds none)."""
    return f"dedup/images/shard-{shard:06d}.parquet"


def with_refs(prints: pl.DataFrame) -> pl.DataFrame:
    """Fingerprint rows (in their files' order) with each image's ``ref``: ``shard << 32 | row``."""
    return prints.with_columns(ref=pl.col("shard").cast(pl.Int64) * (1 << _ROW_BITS) + pl.int_range(pl.len(), dtype=pl.Int64).over("shard"))


def keys_table(prints: pl.DataFrame):
    """Each image's candidate keys, one row per (band, hash, image), as integers: ``kind`` (0-3: the
    four 16-bit bands of ``phash`` and of each border crop's, 4-7: those of ``phash_center``),
    ``hash`` (the whole perceptual hash, which a band's matches are checked by), ``ref``
    (:func:`with_refs`) and ``part``, the key's partition. ``prints``: the fingerprint files' rows;
    images without fingerprints (not decodable) have no keys.
    """
    prints = with_refs(prints)
    # A border crop's phash is keyed as a whole image's is: a copy cropped by that share matches it.
    crops = prints.select("ref", "crop_phashes").explode("crop_phashes").rename({"crop_phashes": "crop_phash"})
    parts = [
        frame.filter(pl.col(col).is_not_null()).select("ref", kind=pl.lit(first + b, pl.Int8), hash=pl.col(col))
        for first, col, frame in ((0, "phash", prints), (BANDS, "phash_center", prints), (0, "crop_phash", crops))
        for b in range(BANDS)
    ]
    keys = pl.concat(parts)
    # Ray Data groups by the key's partition: a call takes many keys (a call per key cost the most).
    return keys.with_columns(part=(_group().hash(seed=1) % PARTITIONS).cast(pl.Int16)).to_arrow()


_BAND_DIVISOR = {kind: 1 << (16 * (kind % BANDS)) for kind in range(2 * BANDS)}


def _group() -> pl.Expr:
    # A key's value: the band's 16 bits, beside its kind (two kinds' bands never group together).
    band = (pl.col("hash") // pl.col("kind").replace_strict(_BAND_DIVISOR, return_dtype=pl.UInt64)) % 65536
    return band + pl.col("kind").cast(pl.UInt64) * 65536


def partition_edges(keys: pl.DataFrame, radius: int) -> pl.DataFrame:
    """The edges ``(a, b)`` (refs) among key rows: images sharing a band whose hashes are within
    ``radius`` bits (:func:`~genixer_ray.hamming.pairs_within`), each pair once."""
    from genixer_ray.hamming import pairs_within

    rows = keys.with_columns(group=_group()).sort("group", "hash", "ref")  # a group's rows together, one order on every machine
    refs = rows["ref"].to_numpy()
    i, j = pairs_within(rows["group"].to_numpy(), rows["hash"].to_numpy(), radius)
    edges = pl.DataFrame({"a": np.minimum(refs[i], refs[j]), "b": np.maximum(refs[i], refs[j])}, schema=EDGES_SCHEMA)
    # An image's own hashes may share a band (its crops'), and two images several bands: once each.
    return edges.filter(pl.col("a") != pl.col("b")).unique(maintain_order=True)


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


def _edges_of_partition(part, *, radius: int):
    """Ray Data's ``map_groups`` call: one partition's keys -> their edges (:func:`partition_edges`)."""
    return partition_edges(pl.from_arrow(part), radius).to_arrow()


def _settings(cfg: ImageDedupConfig, plan: dict, decode_cfg: InputConfig) -> dict:
    return {"radius": cfg.radius, "shards": plan["shards"], "rows": plan["rows"], "max_side": decode_cfg.max_side,
            "max_pixels": decode_cfg.max_pixels, "bands": BANDS, "fingerprints": FINGERPRINT_VERSION}


def shuffle_partitions(tasks: int | None) -> int:
    """The groupby's shuffle partitions for ``tasks`` tasks at once (None: unbounded): two per task, 4 to :data:`PARTITIONS`."""
    return PARTITIONS if tasks is None else min(PARTITIONS, max(4, 2 * tasks))


def duplicate_edges(keys, radius: int, shuffle_partitions: int):
    """The edges among images (a Ray dataset of :func:`keys_table` rows): Ray Data's groupby on
    the keys' partition (hash-shuffled into ``shuffle_partitions``, a few per CPU: Ray Data's
    default of 200 cost a fifth more on 2 cores), each partition's edges by :func:`partition_edges`."""
    return keys.groupby("part", num_partitions=shuffle_partitions).map_groups(
        functools.partial(_edges_of_partition, radius=radius), batch_format="pyarrow")


def find_duplicates(edges: pl.DataFrame, images: pl.DataFrame) -> tuple[dict[str, tuple[str, str]], dict[str, int]]:
    """The duplicates among the ``edges`` (:func:`partition_edges`' frame), each with its
    ``(representative, tier)`` (:func:`clusters`), and the shard of every image in an edge.
    ``images``: the fingerprint rows of (at least) the edges' images, with refs (:func:`with_refs`)."""
    ends = pl.concat([edges["a"], edges["b"]]).unique()
    cols = ["ref", "image_id", "shard", "area", "file_bytes", "image_sha256", "pixels_xxh3"]
    known = {r: rest for r, *rest in images.filter(pl.col("ref").is_in(ends.implode())).select(cols).iter_rows()}

    def tier(a: tuple, b: tuple) -> str:  # the strongest likeness of an edge's two images
        return "exact_bytes" if a[4] == b[4] else "exact_pixels" if a[5] == b[5] else "perceptual"

    found = [(known[a][0], known[b][0], tier(known[a], known[b])) for a, b in edges.iter_rows()]
    size = {i: (area or 0, nbytes or 0) for i, _, area, nbytes, _, _ in known.values()}
    return clusters(found, size), {i: sh for i, sh, *_ in known.values()}


def edge_images(store: RunStore, edges: pl.DataFrame) -> pl.DataFrame:
    """The fingerprint rows (with refs) of the shards the ``edges``' images are in, read from the run."""
    shards = sorted({r >> _ROW_BITS for col in ("a", "b") for r in edges[col].to_list()})
    cols = ["shard", "image_id", "area", "file_bytes", "image_sha256", "pixels_xxh3"]
    frames = [with_refs(store.read_frame(fingerprints_name(k)).select(cols)) for k in shards]
    return pl.concat(frames) if frames else with_refs(pl.DataFrame(schema={c: FINGERPRINTS_SCHEMA[c] for c in cols}))


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
    return ray.get(ray.remote(num_cpus=1)(_write_clusters).remote(run_url, storage_options, duplicate_edges(keys, cfg.radius, shuffle_partitions(pool.max_tasks)), wanted))


def _write_clusters(run_url: str, storage_options: dict, edges, settings: dict) -> dict:
    """The duplicates among ``edges`` written per shard, stale shard files removed, then the marker."""
    store = RunStore(run_url, storage_options)
    found = pl.concat([pl.from_arrow(t) for t in edges.iter_batches(batch_format="pyarrow")] or [pl.DataFrame(schema=EDGES_SCHEMA)])
    dups, shard_of = find_duplicates(found, edge_images(store, found))
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
