"""Image dedup's parts without Ray: candidate keys, a partition's edges, clusters and their
representatives, the stage that skips duplicates before they are read, the funnel's distinct step."""

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from genixer_ray.config import FiltersConfig, InputConfig
from genixer_ray.filters.decide import funnel
from genixer_ray.image_dedup import (
    BANDS,
    FINGERPRINTS_SCHEMA,
    PARTITIONS,
    clusters,
    duplicates_name,
    find_duplicates,
    fingerprints_name,
    keys_table,
    partition_edges,
    with_refs,
)
from genixer_ray.stages.decode import DecodeStage
from genixer_ray.stages.image_dedup import DuplicateImageStage
from genixer_ray.store import RunStore


def test_candidate_keys_are_16_bit_bands_as_integers():
    prints = pl.DataFrame([
        {"shard": 0, "image_id": "a", "area": 4, "image_sha256": "ab", "pixels_xxh3": None, "phash": 0x0001_0002_0003_FFFF, "phash_center": None,
         "crop_phashes": [5, 6, 7]},
        {"shard": 0, "image_id": "b", "area": 9, "image_sha256": "cd", "pixels_xxh3": "ef", "phash": 1, "phash_center": 2},
        {"shard": 1, "image_id": "broken", "area": 0, "image_sha256": None, "pixels_xxh3": None, "phash": None, "phash_center": None},
    ], schema=FINGERPRINTS_SCHEMA)
    keys = pl.from_arrow(keys_table(prints))
    assert keys.schema == {"ref": pl.Int64, "kind": pl.Int8, "hash": pl.UInt64, "part": pl.Int16}  # 19 bytes a key
    a = keys.filter(pl.col("ref") == 0)  # shard 0, row 0: the phash's four bands and each crop's
    assert sorted(a["kind"]) == sorted(list(range(BANDS)) * 4) and set(a["hash"]) == {0x0001_0002_0003_FFFF, 5, 6, 7}
    b = keys.filter(pl.col("ref") == 1)
    assert b.height == 2 * BANDS and sorted(b["kind"]) == list(range(2 * BANDS))  # phash and phash_center, no crops
    assert keys.filter(pl.col("ref") == 1 << 32).height == 0  # broken: shard 1, row 0, no fingerprints
    assert keys["part"].is_between(0, PARTITIONS - 1).all()


def edges(keys: list[tuple[int, int, int]], radius: int) -> set[tuple[int, int]]:
    """partition_edges of (ref, kind, hash) rows, as a set of (a, b)."""
    frame = pl.DataFrame(keys, schema={"ref": pl.Int64, "kind": pl.Int8, "hash": pl.UInt64}, orient="row")
    return set(partition_edges(frame, radius).iter_rows())


def test_a_partitions_edges_join_hashes_within_the_radius_that_share_a_band():
    near, far = 0b1011, (1 << 10) - 1  # 3 and 10 bits from 0: all four share band 3 (kind 3), their top 16 bits
    # 4 has 1's hash: joined to 1 (not compared again); 2 is within 6 bits of 1; 3 of none.
    assert edges([(1, 3, 0), (2, 3, near), (3, 3, far), (4, 3, 0)], 6) == {(1, 4), (1, 2)}
    assert edges([(1, 0, 0), (2, 0, near)], 6) == set()  # band 0 (the low 16 bits) differs: not compared
    # The same band of the centre's hash (kind 4 + 3) is another group; an image's own hashes give no self-edge.
    assert edges([(1, 3, 5), (2, 7, 5), (3, 3, 5 | 1 << 40), (3, 2, 5)], 6) == {(1, 3)}
    # A degenerate band (thousands of images): every pair within the radius found once, each copy of one hash joined once.
    many = edges([(k, 3, k << 20) for k in range(5000)] + [(5000 + k, 3, 0) for k in range(100)], 1)
    assert {(0, 1), (0, 2), (0, 4)} <= many and (1, 2) not in many  # 1 bit from 0; 1 and 2 differ in 2
    assert {(0, 5000 + k) for k in range(100)} <= many


def test_duplicates_take_their_tier_from_the_images_likeness():
    prints = with_refs(pl.DataFrame([
        {"shard": 0, "image_id": i, "area": 4, "file_bytes": 10, "image_sha256": sha, "pixels_xxh3": px, "phash": 0, "phash_center": 0}
        for i, sha, px in (("a", "s1", "p1"), ("b", "s1", "p1"), ("c", "s2", "p1"), ("d", "s3", "p3"))
    ], schema=FINGERPRINTS_SCHEMA))
    dups, shard_of = find_duplicates(pl.DataFrame({"a": [0, 0, 1], "b": [1, 2, 3]}), prints)
    assert dups == {"b": ("a", "exact_bytes"), "c": ("a", "exact_pixels"), "d": ("a", "perceptual")}
    assert shard_of == {"a": 0, "b": 0, "c": 0, "d": 0}


def test_clusters_take_the_largest_image_then_the_largest_file_then_the_smallest_id_and_the_strongest_tier():
    edges = [("b", "c", "perceptual"), ("a", "b", "perceptual"), ("c", "d", "exact_bytes"), ("x", "y", "exact_pixels"), ("copy", "orig", "perceptual")]
    size = {"a": (10, 9), "b": (10, 9), "c": (50, 5), "d": (50, 5), "x": (1, 3), "y": (1, 3), "copy": (64, 900), "orig": (64, 4000)}
    out = clusters(edges, size)
    assert out == {"a": ("c", "perceptual"), "b": ("c", "perceptual"), "d": ("c", "exact_bytes"), "y": ("x", "exact_pixels"),
                   "copy": ("orig", "perceptual")}  # one size: the larger file (less compressed) is generated, though "copy" < "orig"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9), st.sampled_from(["perceptual", "exact_bytes"])), max_size=25), st.randoms())
def test_clusters_do_not_depend_on_the_order_edges_come_in(edges, rnd):
    named = [(f"i{a}", f"i{b}", t) for a, b, t in edges if a != b]
    size = {f"i{k}": (k % 3, k % 2) for k in range(10)}
    shuffled = [(b, a, t) if rnd.random() < 0.5 else (a, b, t) for a, b, t in rnd.sample(named, len(named))]
    assert clusters(named, size) == clusters(shuffled, size)


def test_the_stage_skips_duplicates_before_they_are_read(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    prints = {"image_sha256": "s", "pixels_xxh3": "x", "phash": 7, "phash_center": 9}
    store.write_frame(fingerprints_name(0), pl.DataFrame([{"shard": 0, "image_id": i, "area": 4} | prints for i in ("a", "b")], schema=FINGERPRINTS_SCHEMA))
    store.write_frame(duplicates_name(0), pl.DataFrame([{"image_id": "b", "duplicate_of": "a", "tier": "exact_bytes"}]))
    rows = [{"shard": 0, "image_id": i, "source": f"/nowhere/{i}.png", "data": None} for i in ("a", "b")]
    rows.append({"shard": 1, "image_id": "c", "source": "/nowhere/c.png", "data": None})  # a shard without duplicates
    marked = DuplicateImageStage(store.url, {})(rows)
    assert [r.get("status") for r in marked] == [None, "skipped", None]
    b = marked[1]
    assert (b["error_code"], b["error_stage"], b["duplicate_of"], b["phash"]) == ("duplicate_image", "image_dedup", "a", 7)
    decoded = DecodeStage(InputConfig())(marked)  # the duplicate is not read (its file does not exist)
    assert [(r["status"], r.get("error_code")) for r in decoded] == [("error", "missing"), ("skipped", "duplicate_image"), ("error", "missing")]


def test_the_funnel_counts_distinct_images_when_image_dedup_ran():
    rows = [{"status": "skipped", "error_code": "duplicate_image", "task": "rec"}, {"status": "ok", "text": "q", "parsed_task": "rec"}]
    assert funnel(rows, FiltersConfig(), image_dedup=True) == {"rec": {"rows": 2, "distinct": 1, "generated": 1, "parsed": 1, "kept": 1}}
    assert "distinct" not in funnel(rows, FiltersConfig())["rec"]
