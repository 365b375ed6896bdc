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


@pytest.mark.parametrize("where", ["local", "s3"])
def test_plan_files_written_several_at_once_keep_their_shards(where, tmp_path, request, monkeypatch):
    """Plan files are written several at a time (8 on an object store): each still holds its own
    shard's rows, a duplicate across shards in flight together is found, and a failed write stops
    the plan before its completion marker."""
    if where == "s3":
        s3 = request.getfixturevalue("s3")
        url, options, in_flight = f"s3://{s3['bucket']}/plan-test", s3["storage_options"], None
    else:
        url, options, in_flight = str(tmp_path / "run"), {}, 3
    rows = [{"image_id": f"i{n}", "source": "s", "data": None} for n in range(23)]
    store = RunStore(f"{url}/ok", options)
    plan = store.write_plan(iter(rows), 2, in_flight=in_flight)
    assert plan["rows_per_shard"] == [2] * 11 + [1]
    for k in range(12):
        part = store.read_frame(store.plan_name(k))
        assert part["image_id"].to_list() == [f"i{n}" for n in range(2 * k, min(2 * k + 2, 23))] and set(part["shard"]) == {k}
    with pytest.raises(ValueError, match="duplicate image ids \\('i3' x2\\)"):
        RunStore(f"{url}/dup", options).write_plan(iter(rows[:5] + rows[3:4]), 2, in_flight=in_flight)
    failing = RunStore(f"{url}/fail", options)
    write = failing.write_frame

    def write_frame(rel, frame):
        if rel == failing.plan_name(4):
            raise OSError("disk full")
        return write(rel, frame)

    monkeypatch.setattr(failing, "write_frame", write_frame)
    with pytest.raises(OSError, match="disk full"):
        failing.write_plan(iter(rows), 2, in_flight=in_flight)
    assert failing.plan() is None


def test_planning_unique_ids_reads_no_plan_file_back(tmp_path, monkeypatch):
    """The duplicate check hashes each shard's ids as it is written: with every id unique, no
    plan file is read back (on an object store each would be a request)."""
    store = RunStore(str(tmp_path / "run"))
    reads = []
    monkeypatch.setattr(store, "read_frame", lambda name, **kw: reads.append(name))
    plan = store.write_plan(({"image_id": f"i{n}", "source": "s", "data": None} for n in range(50)), 4)
    assert plan["shards"] == 13 and reads == []


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


def test_links_out_of_the_folder_loops_and_undecodable_names(tmp_path):
    import os

    from genixer_ray.schema import to_frame
    from genixer_ray.stages.decode import DecodeStage

    outside, folder = tmp_path / "outside", tmp_path / "photos"
    (outside / "private").mkdir(parents=True)
    folder.mkdir()
    (outside / "secret.png").write_bytes(b"not for the model")
    (outside / "private" / "more.png").write_bytes(b"nor this")
    (folder / "ok.png").write_bytes(b"x")
    os.symlink(outside / "secret.png", folder / "link-file.png")  # a link to a file outside
    os.symlink(outside / "private", folder / "link-dir")  # a link to a directory outside
    os.symlink(folder, folder / "loop")  # a directory loop back into the folder
    os.symlink(folder / "self.png", folder / "self.png")  # a file link loop
    os.symlink(folder / "ok.png", folder / "inside.png")  # a link that stays inside: fine
    bad_name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    (folder / bad_name).write_bytes(b"x")
    rows = {r["image_id"]: r for r in iter_inputs(InputConfig(source=str(folder)))}
    assert rows["link-file.png"]["error_code"] == "path_escapes_root"
    assert not any(k.startswith(("link-dir/", "loop/")) for k in rows)  # links to folders are not walked into
    assert rows["caf\ufffd.png"]["error_code"] == "bad_file_name"
    assert "error_code" not in rows["ok.png"] and "error_code" not in rows["inside.png"]
    # Every row is text Parquet can hold, and reading them gives error rows, never the outside bytes.
    decoded = {r["image_id"]: r for r in DecodeStage(InputConfig(source=str(folder)))(list(rows.values()))}
    assert decoded["link-file.png"]["error_stage"] == "input" and "pixels" not in decoded["link-file.png"]
    assert decoded["self.png"]["error_code"] in ("read_failed", "missing")  # the loop fails to read, alone
    to_frame([{k: v for k, v in r.items() if k != "data"} | {"shard": 0} for r in decoded.values()])


def test_manifest_names_through_links_are_refused(tmp_path):
    import os

    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.png").write_bytes(b"x")
    os.symlink(tmp_path / "outside.png", root / "via-link.png")
    (root / "in.png").write_bytes(b"x")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in [
        {"image_id": "a", "path": "via-link.png"}, {"image_id": "b", "path": "in.png"},
        {"image_id": "c", "path": str(tmp_path / "outside.png")},
    ]))
    rows = {r["image_id"]: r for r in iter_inputs(InputConfig(source=str(manifest), root=str(root)))}
    assert rows["a"]["error_code"] == "path_escapes_root" and "error_code" not in rows["b"]
    assert rows["c"]["error_code"] == "path_escapes_root"  # with input.root set, absolute paths must lie under it too
