"""genixer-ray verify on runs written by hand: it passes a whole run and fails each kind of damage."""

import json
import shutil

import pytest

from genixer_ray.cli import main
from genixer_ray.schema import to_frame
from genixer_ray.store import RunStore
from genixer_ray.verify import verify_run

IDS = [f"img{i:02d}" for i in range(9)]


def whole_run(tmp_path) -> RunStore:
    """A run of 9 planned ids in 3 shards of 3, every shard committed with its marker."""
    store = RunStore(str(tmp_path / "runs" / "r"))
    store.write_plan(iter({"image_id": i, "source": f"/x/{i}.png", "data": None} for i in IDS), shard_size=3, meta={})
    for k in range(3):
        rows = [{"shard": k, "image_id": i, "source": f"/x/{i}.png", "status": "ok"} for i in IDS[3 * k : 3 * k + 3]]
        store.commit_shard(k, to_frame(rows), {"by_status": {"ok": 3}, "by_error": {}, "by_task": {}})
    return store


def test_a_whole_run_verifies(tmp_path, capsys):
    store = whole_run(tmp_path)
    v = verify_run(store.url)
    assert v.ok and v.planned == 9 and v.rows == 9
    assert main(["verify", store.url]) == 0 and "OK" in capsys.readouterr().out


def test_a_shard_copied_twice_is_doubled(tmp_path, capsys):
    store = whole_run(tmp_path)
    root = tmp_path / "runs" / "r"
    shutil.copy(root / "data" / "shard-000001.parquet", root / "data" / "shard-000007.parquet")
    v = verify_run(store.url)
    assert v.counts == {"shard_without_marker": 1}
    marker = json.loads((root / "commits" / "shard-000001.json").read_text())
    (root / "commits" / "shard-000007.json").write_text(json.dumps(marker | {"shard": 7}))
    v = verify_run(store.url)
    assert v.counts["not_planned"] == 3  # shard 7 is in no plan: its rows are there twice
    assert main(["verify", store.url]) == 1 and "not_planned: 3" in capsys.readouterr().out


def test_a_removed_shard_is_missing_and_a_bad_marker_is_caught(tmp_path):
    store = whole_run(tmp_path)
    root = tmp_path / "runs" / "r"
    (root / "data" / "shard-000002.parquet").unlink()
    v = verify_run(store.url)
    assert v.counts == {"marker_without_shard": 1, "missing": 3}
    marker = json.loads((root / "commits" / "shard-000000.json").read_text())
    (root / "commits" / "shard-000000.json").write_text(json.dumps(marker | {"rows": 4}))
    assert verify_run(store.url).counts["marker_count_mismatch"] == 1


def test_rewritten_rows_fail_the_checksum_and_doubles_are_found(tmp_path):
    store = whole_run(tmp_path)
    rows = [{"shard": 1, "image_id": i, "source": "/x", "status": "ok"} for i in ("img03", "img03", "img05")]
    store.write_frame(store.shard_name(1), to_frame(rows))  # same count, other bytes, one id twice
    v = verify_run(store.url)
    assert v.counts == {"checksum_mismatch": 1, "missing": 1, "doubled": 1}


def test_not_a_run(tmp_path, capsys):
    with pytest.raises(ValueError, match="no run at"):
        verify_run(str(tmp_path))
    assert main(["verify", str(tmp_path)]) == 2


def test_every_image_and_sample_exactly_once(tmp_path):
    """A plan of 4 images at 3 samples each promises 12 rows; a missing or doubled sample is named as ``id#sample``."""
    store = RunStore(str(tmp_path / "runs" / "s"))
    store.write_plan(iter({"image_id": i, "source": f"/x/{i}.png", "data": None} for i in IDS[:4]), shard_size=2, meta={"samples_per_image": 3})
    for k in range(2):
        rows = [{"shard": k, "image_id": i, "sample": s, "source": "/x", "status": "ok"} for i in IDS[2 * k : 2 * k + 2] for s in range(3)]
        store.commit_shard(k, to_frame(rows), {"by_status": {"ok": 6}, "by_error": {}, "by_task": {}})
    v = verify_run(store.url)
    assert v.ok and v.planned == 12 and v.rows == 12
    rows = [{"shard": 1, "image_id": i, "sample": s, "source": "/x", "status": "ok"} for i, s in
            [("img02", 0), ("img02", 1), ("img02", 1), ("img03", 0), ("img03", 1), ("img03", 2)]]
    store.commit_shard(1, to_frame(rows), {"by_status": {"ok": 6}, "by_error": {}, "by_task": {}})
    v = verify_run(store.url)
    assert v.counts == {"missing": 1, "doubled": 1}
    assert v.problems == {"missing": ["img02#2 (shard 1)"], "doubled": ["img02#1 2 times in shard 1"]}


def test_copies_partial_uploads_and_foreign_files_are_reported_and_readers_skip_them(tmp_path):
    """A shard copied beside itself under another name, a partial upload and a foreign file in a
    run's folders fail verify by name; scan_run reads the committed shards only."""
    import polars as pl

    from genixer_ray import scan_run

    store = whole_run(tmp_path)
    root = tmp_path / "runs" / "r"
    assert verify_run(store.url).ok and pl.scan_pyarrow_dataset(scan_run(store.url)).collect().height == 9
    shutil.copy(root / "data" / "shard-000000.parquet", root / "data" / "shard-000000-copy.parquet")
    (root / "data" / "shard-000004.parquet.tmp").write_bytes(b"PAR1")
    (root / "notes.txt").write_text("mine")
    (root / "filtered" / "p").mkdir(parents=True)
    (root / "filtered" / "p" / "anything").write_text("a filter pass's own folder is verified on its own")
    v = verify_run(store.url)
    assert v.counts == {"foreign_object": 3}
    assert v.problems["foreign_object"] == ["data/shard-000000-copy.parquet", "data/shard-000004.parquet.tmp", "notes.txt"]
    assert len(pl.read_parquet(str(root / "data" / "*.parquet"))) == 12  # the glob reads the copy too; scan_run does not:
    assert pl.scan_pyarrow_dataset(scan_run(store.url)).collect().height == 9
    # A shard written before its marker: not read.
    shutil.copy(root / "data" / "shard-000002.parquet", root / "data" / "shard-000003.parquet")
    assert scan_run(store.url).count_rows() == 9


def test_the_guides_reading_recipes_read_committed_rows_once(tmp_path):
    import re
    from pathlib import Path

    store = whole_run(tmp_path)
    root = tmp_path / "runs" / "r"
    shutil.copy(root / "data" / "shard-000000.parquet", root / "data" / "shard-000000-copy.parquet")
    readme = (Path(__file__).resolve().parents[2] / "docs" / "guide" / "output.md").read_text()
    recipe = re.search(r"```python\n(import polars as pl, duckdb.*?)```", readme, re.S).group(1).replace("runs/demo", store.url)
    scope: dict = {}
    exec(recipe, scope)
    assert scope["rows"].collect().height == 9 and scope["table"].num_rows == 9
    assert scope["n_rows"] == 9  # DuckDB's count over the same dataset
