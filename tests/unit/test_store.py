"""Shards, commit markers and the shard writer; no Ray."""

import functools
import logging

import polars as pl
import pytest

from genixer_ray.config import FiltersConfig
from genixer_ray.filters.decide import decide_shard
from genixer_ray.overlap import overlapped
from genixer_ray.store import RunStore
from genixer_ray.summary import RunSummary
from genixer_ray.writer import ShardWriter

DECIDE = functools.partial(decide_shard, cfg=FiltersConfig())  # no filter enabled: every ok row kept


def rows(shard, ids, status="ok"):
    return [{"shard": shard, "image_id": i, "status": status, "error_code": None if status == "ok" else "empty"} for i in ids]


def test_writer_commits_full_shards_only_and_dedupes(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="genixer_ray")  # progress is logged; the CLI shows it
    store = RunStore(str(tmp_path / "run"))
    w = ShardWriter(store, {0: 2, 1: 3}, DECIDE, every_s=0)
    w.add(rows(1, ["c", "d"]) + rows(0, ["a"]))
    assert store.committed() == set()
    w.add(rows(0, ["a"]))  # a retried batch delivered again: ignored
    assert store.committed() == set()
    w.add(rows(0, ["b"], status="error"))
    assert store.committed() == {0}
    assert store.read_rows(["image_id"]).to_dict(as_series=False) == {"image_id": ["a", "b"]}  # committed shards only
    with pytest.raises(RuntimeError, match=r"\{1: 1\}"):
        w.finish()
    w.add(rows(1, ["e"]))
    w.finish()
    assert store.committed() == {0, 1}
    df = store.read_rows()
    assert sorted(df["image_id"].to_list()) == ["a", "b", "c", "d", "e"]
    marker = store.read_json(store.marker_name(0))
    assert marker["rows"] == 2 and marker["by_status"] == {"ok": 1, "error": 1} and marker["by_error"] == {"empty": 1}
    assert "[generate] 5/5 rows, 2/2 shards" in caplog.text


def test_progress_rate_leaves_the_engines_start_up_out(tmp_path, caplog, monkeypatch):
    """No rate or ETA until rows have flowed for a second (a rate over the start-up would promise
    minutes for a run seconds from its end); then rows/s and the ETA count from the first rows."""
    caplog.set_level(logging.INFO, logger="genixer_ray")
    clock = [100.0]
    monkeypatch.setattr("genixer_ray.writer.time.monotonic", lambda: clock[0])
    w = ShardWriter(RunStore(str(tmp_path / "run")), {0: 2, 1: 2, 2: 2}, DECIDE, every_s=0)
    clock[0] = 130.0  # the engine took 30 s to start
    w.add(rows(0, ["a", "b"]))
    assert "[generate] 2/6 rows, 1/3 shards, first rows after 30s, errors: none" in caplog.text
    assert "ETA" not in caplog.text
    clock[0] = 132.0
    w.add(rows(1, ["c", "d"]))
    assert "[generate] 4/6 rows, 2/3 shards, 2.00 rows/s, ETA 1s, errors: none" in caplog.text
    clock[0] = 133.0
    w.add(rows(2, ["e", "f"]))
    w.finish()
    assert "[generate] 6/6 rows, 3/3 shards, 2.00 rows/s, errors: none" in caplog.text


def test_how_full_the_engine_ran_reaches_progress_markers_and_manifest(tmp_path, caplog):
    """Rows' engine statistics add up per shard marker and across markers (a resumed run too);
    rows the engine never saw count nowhere."""
    caplog.set_level(logging.INFO, logger="genixer_ray")
    store = RunStore(str(tmp_path / "run"))
    w = ShardWriter(store, {0: 2, 1: 2}, DECIDE, every_s=0, engine_stats=True)
    seen = [r | {"engine_running": run, "prompt_tokens": 100, "cached_tokens": cached} for r, run, cached in zip(rows(0, ["a", "b"]), (60.0, 62.0), (0, 50))]
    w.add(seen)
    w.add(rows(1, ["c"]) + rows(1, ["d"], status="error"))  # no engine statistics (a transformers row, an error row)
    w.finish()
    assert store.read_json(store.marker_name(0))["engine"] == {"rows": 2, "running": 122.0, "prompt_tokens": 200, "cached_tokens": 50}
    assert store.read_json(store.marker_name(1))["engine"] == {"rows": 0, "running": 0.0, "prompt_tokens": 0, "cached_tokens": 0}
    assert "engine: 61.0 sequences running, prefix cache 25%" in caplog.text
    summary = RunSummary(output=store.url)
    for m in store.markers():
        summary.add_marker(m)
    assert summary.counts()["engine"] == {"mean_running": 61.0, "prefix_cache_hit_rate": 0.25}
    plain = RunStore(str(tmp_path / "plain"))
    ShardWriter(plain, {0: 2}, DECIDE, every_s=0).add(seen)  # a filter pass: no engine statistics
    assert "engine" not in plain.read_json(plain.marker_name(0))


def test_shard_without_marker_is_not_read(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    store.write_frame(store.shard_name(3), pl.DataFrame({"image_id": ["x"]}))
    assert store.committed() == set() and store.read_rows().height == 0


def test_rows_of_an_unplanned_shard_are_refused(tmp_path):
    w = ShardWriter(RunStore(str(tmp_path / "run")), {0: 1}, DECIDE)
    with pytest.raises(RuntimeError, match="shard 5"):
        w.add(rows(5, ["z"]))


def test_unwritable_store_fails_fast(tmp_path):
    from genixer_ray.store import StorageError

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match="not writable"):
        RunStore(str(blocker / "run")).check_writable()


def test_s3_store_round_trip(s3):
    store = RunStore(f"s3://{s3['bucket']}/store-test", s3["storage_options"])
    store.check_writable()
    w = ShardWriter(store, {0: 1}, DECIDE)
    w.add(rows(0, ["only"]))
    w.finish()  # on an object store commits run beside the caller; finish waits for them
    assert store.committed() == {0}
    assert store.read_rows()["image_id"].to_list() == ["only"]
    assert [m["rows"] for m in store.markers()] == [1]


def test_s3_commits_overlap_and_a_failed_one_stops_the_writer(s3, monkeypatch):
    store = RunStore(f"s3://{s3['bucket']}/overlap-test", s3["storage_options"])
    w = ShardWriter(store, dict.fromkeys(range(20), 2), DECIDE, commits_in_flight=4)
    for k in range(20):
        w.add(rows(k, [f"a{k}", f"b{k}"]))
        assert len(w.commits) <= 4
    w.finish()
    assert store.committed() == set(range(20)) and w.committed == 20
    assert [m["rows"] for m in store.markers()] == [2] * 20

    failing = RunStore(f"s3://{s3['bucket']}/failing-test", s3["storage_options"])
    commit = failing.commit_shard

    def commit_shard(k, df, counts):
        if k == 3:
            raise OSError("the bucket went away")
        commit(k, df, counts)

    monkeypatch.setattr(failing, "commit_shard", commit_shard)
    w = ShardWriter(failing, dict.fromkeys(range(6), 1), DECIDE, commits_in_flight=2)
    with pytest.raises(OSError, match="the bucket went away"):
        for k in range(6):
            w.add(rows(k, [f"i{k}"]))
        w.finish()
    assert 3 not in failing.committed()


def test_markers_come_in_shard_order_across_requests_and_skip_one_gone(tmp_path, monkeypatch):
    store = RunStore(str(tmp_path / "run"))
    w = ShardWriter(store, dict.fromkeys(range(12), 1), DECIDE)
    w.add([r for k in (11, 3, 0, 7, 10, 1, 2, 4, 5, 6, 8, 9) for r in rows(k, [f"i{k}"])])
    assert [m["shard"] for m in store.markers(per_request=5)] == list(range(12))
    # A marker listed but gone by the time it is read (a store cleaned meanwhile) is skipped.
    monkeypatch.setattr(store, "committed", lambda: {0, 1, 99})
    assert [m["shard"] for m in store.markers(per_request=2)] == [0, 1]


def test_the_writer_keys_rows_by_image_and_sample(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    w = ShardWriter(store, {0: 4}, DECIDE)
    sampled = [r | {"sample": s} for s in (1, 0) for r in rows(0, ["b", "a"])]
    w.add(sampled[:3])
    w.add(sampled[1:2])  # (a, 1) again: a retried batch, ignored
    assert store.committed() == set()
    w.add(sampled[3:])
    w.finish()
    df = store.read_rows()
    assert list(zip(df["image_id"], df["sample"])) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]  # (image, sample) order


def test_overlapped_runs_calls_at_once_keeps_order_bounds_the_pending_and_raises():
    import threading

    first_four = threading.Barrier(4, timeout=30)  # broken unless the first 4 calls run at once
    running, peak, lock, taken = 0, 0, threading.Lock(), []

    def square(i):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        if i < 4:
            first_four.wait()
        with lock:
            running -= 1
        return i * i

    def items():
        for i in range(20):
            taken.append(i)
            yield i

    out = []
    for r in overlapped(square, items(), 4):
        out.append(r)
        assert len(taken) - len(out) <= 4  # items taken ahead of the results stay bounded
    assert out == [i * i for i in range(20)] and peak == 4
    assert list(overlapped(square, range(5, 8), 1)) == [25, 36, 49]  # 1: in the caller

    def shard(i):
        if i == 3:
            raise OSError("shard 3 unreadable")
        return i

    with pytest.raises(OSError, match="shard 3"):
        list(overlapped(shard, range(8), 2))
