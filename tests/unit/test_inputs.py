"""Input listing (folder, manifests, S3) and the plan it becomes; no Ray."""

import json

import polars as pl
import pytest

from genixer_ray.config import InputConfig
from genixer_ray.inputs import InputError, iter_inputs
from genixer_ray.paths import resolve_under_root
from genixer_ray.store import RunStore


def test_folder_ids_are_relative_sorted_recursive(tmp_path):
    (tmp_path / "b").mkdir()
    for rel in ("b/z.PNG", "a.jpg", "a.png", "b/notes.txt", "c.webp"):
        (tmp_path / rel).write_bytes(b"x")
    rows = list(iter_inputs(InputConfig(source=str(tmp_path))))
    assert [r["image_id"] for r in rows] == ["a.jpg", "a.png", "c.webp", "b/z.PNG"]
    assert rows[0]["source"].endswith("/a.jpg") and rows[0]["data"] is None


def test_missing_folder_or_manifest_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="input.source"):
        list(iter_inputs(InputConfig(source=str(tmp_path / "nope"))))
    with pytest.raises(InputError, match="input.source"):
        list(iter_inputs(InputConfig(source=str(tmp_path / "nope.jsonl"))))


def test_jsonl_manifest_resolves_under_root_and_refuses_escape(tmp_path):
    m = tmp_path / "set" / "manifest.jsonl"
    m.parent.mkdir()
    lines = [{"image_id": "a", "path": "img/a.jpg"}, {"image_id": "b", "path": "../../etc/passwd"}, {"image_id": "c", "uri": "s3://x/c.png"}]
    m.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    rows = list(iter_inputs(InputConfig(source=str(m))))
    assert rows[0]["source"] == f"{m.parent}/img/a.jpg"
    assert rows[1]["error_code"] == "path_escapes_root"
    assert rows[2]["source"] == "s3://x/c.png"
    rows = list(iter_inputs(InputConfig(source=str(m), root="/data")))
    assert rows[0]["source"] == "/data/img/a.jpg"


def test_csv_and_parquet_bytes_manifests(tmp_path):
    (tmp_path / "m.csv").write_text("image_id,path\n1,x.png\n2,y.png\n")
    rows = list(iter_inputs(InputConfig(source=str(tmp_path / "m.csv"), limit=1)))
    assert [(r["image_id"], r["source"]) for r in rows] == [("1", f"{tmp_path}/x.png")]
    pl.DataFrame({"image_id": ["p", "q"], "image": [b"\x89PNG...", b"jpeg..."]}).write_parquet(tmp_path / "m.parquet")
    rows = list(iter_inputs(InputConfig(source=str(tmp_path / "m.parquet"))))
    assert [(r["image_id"], r["data"]) for r in rows] == [("p", b"\x89PNG..."), ("q", b"jpeg...")]


def test_manifest_without_image_id_or_reference_fails(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"path": "a.png"}\n')
    with pytest.raises(InputError, match="entry 1 has no image_id"):
        list(iter_inputs(InputConfig(source=str(tmp_path / "m.jsonl"))))
    (tmp_path / "m.jsonl").write_text('{"image_id": "a"}\n')
    with pytest.raises(InputError, match="has none of"):
        list(iter_inputs(InputConfig(source=str(tmp_path / "m.jsonl"))))


@pytest.mark.parametrize("ref, ok", [("a/../b.png", True), ("..", False), ("a/../../b", False), ("./x.png", True)])
def test_resolve_under_root(ref, ok):
    assert (resolve_under_root(ref, "/r") is not None) == ok


def test_plan_shards_and_duplicate_ids(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    rows = [{"image_id": f"i{n}", "source": "s", "data": None} for n in range(7)]
    plan = store.write_plan(iter(rows), 3, meta={"input": {"source": "x"}})
    assert plan["rows_per_shard"] == [3, 3, 1] and store.plan() == plan
    part = pl.read_parquet(store.path(store.plan_name(2)))
    assert part["image_id"].to_list() == ["i6"] and part["shard"].to_list() == [2]
    dup = RunStore(str(tmp_path / "dup"))
    with pytest.raises(ValueError, match="duplicate image ids \\('i1' x2\\)"):
        dup.write_plan(iter(rows + rows[1:2]), 3)
    assert dup.plan() is None  # no complete plan: nothing will run


def test_s3_folder_and_manifest(s3):
    import fsspec

    fs = fsspec.filesystem("s3", **s3["storage_options"])
    root = f"{s3['bucket']}/inputs-listing"
    for rel in ("x/1.png", "2.jpg", "skip.txt"):
        fs.pipe_file(f"{root}/{rel}", b"data")
    fs.pipe_file(f"{root}/m.jsonl", b'{"image_id": "one", "path": "x/1.png"}\n')
    cfg = InputConfig(source=f"s3://{root}", storage_options=s3["storage_options"])
    rows = list(iter_inputs(cfg))
    assert [(r["image_id"], r["source"]) for r in rows] == [("2.jpg", f"s3://{root}/2.jpg"), ("x/1.png", f"s3://{root}/x/1.png")]
    cfg = InputConfig(source=f"s3://{root}/m.jsonl", storage_options=s3["storage_options"])
    assert [r["source"] for r in iter_inputs(cfg)] == [f"s3://{root}/x/1.png"]


def test_listing_streams(tmp_path):
    """Rows come out before the whole manifest is read: a bad line far down is not touched."""
    import itertools

    m = tmp_path / "m.jsonl"
    m.write_text("".join(json.dumps({"image_id": f"i{n}", "path": "x.png"}) + "\n" for n in range(1000)) + "{broken\n")
    first = list(itertools.islice(iter_inputs(InputConfig(source=str(m))), 2))
    assert [r["image_id"] for r in first] == ["i0", "i1"]
    with pytest.raises(InputError, match="line 1001 is not JSON"):
        list(iter_inputs(InputConfig(source=str(m))))
