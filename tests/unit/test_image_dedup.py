"""Image dedup's parts without Ray: candidate keys, the edges of a key's group, clusters and their
representatives, the stage that skips duplicates before they are read, the funnel's distinct step."""

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from genixer_ray.config import FiltersConfig, InputConfig
from genixer_ray.filters.decide import funnel
from genixer_ray.image_dedup import (
    BANDS,
    FINGERPRINTS_SCHEMA,
    clusters,
    duplicates_name,
    fingerprints_name,
    group_edges,
    keys_table,
)
from genixer_ray.stages.decode import DecodeStage
from genixer_ray.stages.image_dedup import DuplicateImageStage
from genixer_ray.store import RunStore


def test_candidate_keys_are_exact_hashes_and_16_bit_bands():
    prints = pl.DataFrame([
        {"shard": 0, "image_id": "a", "area": 4, "image_sha256": "ab", "pixels_xxh3": None, "phash": 0x0001_0002_0003_FFFF, "phash_center": None},
        {"shard": 0, "image_id": "b", "area": 9, "image_sha256": "cd", "pixels_xxh3": "ef", "phash": 1, "phash_center": 2},
        {"shard": 1, "image_id": "broken", "area": 0, "image_sha256": None, "pixels_xxh3": None, "phash": None, "phash_center": None},
    ], schema=FINGERPRINTS_SCHEMA)
    keys = pl.from_arrow(keys_table(prints))
    a = keys.filter(pl.col("image_id") == "a")
    assert sorted(a["key"]) == ["h0:65535", "h1:3", "h2:2", "h3:1", "s:ab"] and set(a["area"]) == {4}
    assert a.filter(pl.col("key") == "h1:3")["hash"].to_list() == [0x0001_0002_0003_FFFF] and a.filter(pl.col("key") == "s:ab")["hash"].to_list() == [0]
    assert keys.filter(pl.col("image_id") == "b").height == 2 + 2 * BANDS and "broken" not in keys["image_id"]


def test_a_groups_edges_join_exact_copies_and_hashes_within_the_radius():
    assert group_edges("s:ab", ["a", "b", "c"], [0, 0, 0], 6) == [("a", "b", "exact_bytes"), ("a", "c", "exact_bytes")]
    near, far = 0b1011, (1 << 10) - 1  # 3 and 10 bits from 0
    edges = group_edges("h0:0", ["a", "b", "c", "d"], [0, near, far, 0], 6)
    assert sorted(edges) == [("a", "b", "perceptual"), ("a", "d", "perceptual")]
    # A degenerate band (thousands of images) is compared in chunks, every pair within the radius found once.
    ids = [f"i{k}" for k in range(5000)]
    many = group_edges("c1:0", ids, [k << 20 for k in range(5000)], 1)  # distinct hashes, all pairs >= 1 bit apart
    assert len(many) == len(set(many)) and all(a != b for a, b, _ in many)
    assert {(a, b) for a, b, _ in many} >= {("i0", "i1"), ("i0", "i2"), ("i0", "i4")}  # 1 bit apart from 0


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
