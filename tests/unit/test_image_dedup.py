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
    fingerprints_name,
    keys_table,
    partition_edges,
)
from genixer_ray.stages.decode import DecodeStage
from genixer_ray.stages.image_dedup import DuplicateImageStage
from genixer_ray.store import RunStore


def test_candidate_keys_are_exact_hashes_and_16_bit_bands_of_integers():
    prints = pl.DataFrame([
        {"shard": 0, "image_id": "a", "area": 4, "image_sha256": "ab", "pixels_xxh3": None, "phash": 0x0001_0002_0003_FFFF, "phash_center": None},
        {"shard": 0, "image_id": "b", "area": 9, "image_sha256": "cd", "pixels_xxh3": "ef", "phash": 1, "phash_center": 2},
        {"shard": 1, "image_id": "broken", "area": 0, "image_sha256": None, "pixels_xxh3": None, "phash": None, "phash_center": None},
    ], schema=FINGERPRINTS_SCHEMA)
    keys = pl.from_arrow(keys_table(prints))
    assert keys.schema == {"ref": pl.Int64, "kind": pl.Int8, "hash": pl.UInt64, "part": pl.Int16}  # 19 bytes a key
    a = keys.filter(pl.col("ref") == 0)  # shard 0, row 0
    assert sorted(a["kind"]) == [0, 2, 3, 4, 5] and set(a.filter(pl.col("kind") > 1)["hash"]) == {0x0001_0002_0003_FFFF}
    b = keys.filter(pl.col("ref") == 1)
    assert b.height == 2 + 2 * BANDS and sorted(set(b["kind"])) == list(range(10))
    assert keys.filter(pl.col("ref") == 1 << 32).height == 0  # broken: shard 1, row 0, no fingerprints
    assert keys["part"].is_between(0, PARTITIONS - 1).all()


def edges(keys: list[tuple[int, int, int]], radius: int) -> set[tuple[int, int, int]]:
    """partition_edges of (ref, kind, hash) rows, as a set of (a, b, tier)."""
    frame = pl.DataFrame(keys, schema={"ref": pl.Int64, "kind": pl.Int8, "hash": pl.UInt64}, orient="row")
    return set(partition_edges(frame, radius).iter_rows())


def test_a_partitions_edges_join_exact_copies_and_hashes_within_the_radius():
    assert edges([(1, 0, 77), (2, 0, 77), (3, 0, 77), (4, 0, 78)], 6) == {(1, 2, 0), (1, 3, 0)}  # the same file: to the first
    assert edges([(1, 1, 77), (2, 0, 77)], 6) == set()  # a file digest and a pixel digest never group
    near, far = 0b1011, (1 << 10) - 1  # 3 and 10 bits from 0: all four share band 3 (kind 5), its top 16 bits
    # 4 has 1's hash: joined to 1 (not compared again); 2 is within 6 bits of 1; 3 of none.
    assert edges([(1, 5, 0), (2, 5, near), (3, 5, far), (4, 5, 0)], 6) == {(1, 4, 2), (1, 2, 2)}
    assert edges([(1, 2, 0), (2, 2, near)], 6) == set()  # band 0 (the low 16 bits) differs: not compared
    # Bands of other kinds (the centre's) are other groups; an image's own hashes give no self-edge.
    assert edges([(1, 2, 5), (1, 3, 5), (2, 6, 5)], 6) == set()
    # A degenerate band (thousands of images): every pair within the radius found once, each copy of one hash joined once.
    many = edges([(k, 2, k << 20) for k in range(5000)] + [(5000 + k, 2, 0) for k in range(100)], 1)
    assert {(0, 1, 2), (0, 2, 2), (0, 4, 2)} <= many and (1, 2, 2) not in many  # 1 bit from 0; 1 and 2 differ in 2
    assert {(0, 5000 + k, 2) for k in range(100)} <= many and len({(a, b) for a, b, _ in many}) == len(many)


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
