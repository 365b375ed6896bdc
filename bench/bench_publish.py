"""Publishing: `genixer-ray publish` against copying the same rows and image bytes with pyarrow alone.

A run of kept rows is written by hand (``--rows``, 256 per shard) over JPEG files on disk, 640 px
on the long side like a crawl's images (about 60 KB, 64 distinct files reused by the rows). Then,
each in a fresh process so that peak memory is its own:

* the baseline: each committed shard read with pyarrow, each row's image file read, the rows with
  an image-bytes column written with ``pyarrow.parquet`` (what any publisher must at least do);
* ``publish`` with the ``datasets`` layout only (the same bytes written once: the ratio's target);
* ``publish`` with both layouts (Parquet and WebDataset tars: the bytes written twice);
* ``publish`` of a run four times as large (datasets layout): peak memory against the first.

    .venv/bin/python bench/bench_publish.py [--rows 2048]
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path


def make_run(root: Path, rows: int) -> str:
    """A committed run of ``rows`` kept rows over 64 JPEG files under ``root``; return its URL."""

    from genixer_ray.images import decode_full, embedded_image_paths
    from genixer_ray.schema import to_frame
    from genixer_ray.store import RunStore

    photos = list(embedded_image_paths().values())
    files = []
    for i in range(64):
        img = decode_full(photos[i % len(photos)].read_bytes())
        img.thumbnail((640, 640))
        img = img.rotate(i * 3, expand=False)  # distinct files
        path = root / "images" / f"img{i:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, format="JPEG", quality=90)
        files.append((str(path), img.size))
    store = RunStore(str(root / "run"))
    store.write_plan(({"image_id": f"img{i:07d}", "source": files[i % len(files)][0], "data": None} for i in range(rows)), shard_size=256)
    created = datetime(2026, 1, 1, tzinfo=UTC)
    for k in range(-(-rows // 256)):
        batch = []
        for i in range(k * 256, min(rows, (k + 1) * 256)):
            src, (w, h) = files[i % len(files)]
            batch.append({
                "shard": k, "image_id": f"img{i:07d}", "sample": 0, "source": src, "status": "ok", "keep": True, "text": "t",
                "parsed_task": ("rec", "common_vqa", "reg")[i % 3], "question": "Where is the red car on the left?",
                "answer": "[0.12,0.30,0.45,0.80]", "answer_boxes": [[0.12, 0.3, 0.45, 0.8]], "image_width": w, "image_height": h,
                "clip_score": 0.3, "judge_p_yes": 0.8, "generator": "/m", "generator_hash": "h", "seed": i, "created_at": created,
            })
        store.commit_shard(k, to_frame(batch), {"by_status": {}, "by_error": {}, "by_task": {}})
    return store.url


def copy_with_pyarrow(run: str, out: str) -> None:
    """The baseline: every committed shard's ok rows with their image bytes, written by pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from genixer_ray.store import RunStore

    store = RunStore(run)
    Path(out).mkdir(parents=True, exist_ok=True)
    for k in sorted(store.committed()):
        table = pq.ParquetFile(store.path(store.shard_name(k))).read()
        images = [Path(s).read_bytes() for s in table.column("source").to_pylist()]
        pq.write_table(table.append_column("image", pa.array(images, pa.binary())), f"{out}/part-{k:05d}.parquet")


def child(args) -> None:
    """One measurement in this process: print its seconds and peak memory as JSON."""
    from genixer_ray.publish import publish_run

    t = time.perf_counter()
    if args.child == "baseline":
        copy_with_pyarrow(args.run, args.out)
    else:
        layouts = "[datasets,webdataset]" if args.child == "both" else "[datasets]"
        publish_run(args.run, args.out, overrides=["license=cc-by-4.0", f"layouts={layouts}"])
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(kind: str, run: str, out: str) -> dict:
    """Run one measurement (:func:`child`) in a fresh process; its seconds and peak memory."""
    cmd = [sys.executable, __file__, "--child", kind, "--run", run, "--out", out]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    """Build the runs, measure each step in its own process, print the table and the ratios."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--child", choices=("baseline", "datasets", "both"))
    ap.add_argument("--run")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        small = make_run(Path(tmp) / "small", args.rows)
        large = make_run(Path(tmp) / "large", 4 * args.rows)
        image_mb = sum(p.stat().st_size for p in (Path(tmp) / "small" / "images").iterdir()) / 64 / 1e6
        rows = {
            "copy with pyarrow (baseline)": measure("baseline", small, f"{tmp}/out-base"),
            "publish, datasets layout": measure("datasets", small, f"{tmp}/out-ds"),
            "publish, datasets + webdataset": measure("both", small, f"{tmp}/out-both"),
            f"publish, datasets layout, {4 * args.rows} rows": measure("datasets", large, f"{tmp}/out-large"),
        }
    print(f"{args.rows} kept rows, images {image_mb * 1000:.0f} KB on average (JPEG, 640 px)")
    print(f"{'step':<44} {'seconds':>8} {'rows/s':>8} {'peak MiB':>9}")
    for name, m in rows.items():
        n = 4 * args.rows if name.endswith("rows") else args.rows
        print(f"{name:<44} {m['seconds']:>8.2f} {n / m['seconds']:>8.0f} {m['max_rss_mib']:>9.0f}")
    base = rows["copy with pyarrow (baseline)"]["seconds"]
    print(f"publish (datasets layout) / pyarrow copy, rows/s: {base / rows['publish, datasets layout']['seconds']:.2f}x (target >= 0.8x)")
    print(f"publish (both layouts) / pyarrow copy, rows/s: {base / rows['publish, datasets + webdataset']['seconds']:.2f}x")
    peak = rows[f"publish, datasets layout, {4 * args.rows} rows"]["max_rss_mib"] / rows["publish, datasets layout"]["max_rss_mib"]
    print(f"peak memory, {4 * args.rows} rows / {args.rows} rows: {peak:.2f}x (flat: about 1)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
