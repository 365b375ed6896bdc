"""Image dedup: how well clustering finds edited copies, and how fast it clusters a million images.

Quality: the regions and the five edits of ``bench_fingerprints.py`` (resized to half and back,
JPEG quality 35, a 6% border cut off each side, +20% brightness, a corner watermark): each region,
its five edited copies and 1,080 regions of other photos are fingerprinted and clustered as a run
clusters them (:func:`~genixer_ray.image_dedup.keys_table`, :func:`~genixer_ray.image_dedup.partition_edges`,
:func:`~genixer_ray.image_dedup.clusters`). Recall: the share of edited copies in their region's
cluster; false merges: images in a cluster with an image of another photo (merges of regions of
one photo, which may overlap by most of their pixels, are counted apart).

Speed: ``--images`` synthetic fingerprints (random 64-bit hashes; ``--planted`` of them copies of
another with 0 to 6 random bits flipped in each hash) through the run's Ray Data path
(:func:`~genixer_ray.image_dedup.duplicate_edges` and :func:`~genixer_ray.image_dedup.find_duplicates`),
against a brute-force pairwise loop (numpy, every pair's Hamming distance) timed on a sample in
the same run and scaled to all pairs. Recall of the planted copies is printed by bits flipped.

A run: ``--crawl`` images (regions of the shipped photos, ``--duplicates`` of them edited copies of
others) generated twice by the tiny generator on Ray, without and with ``image_dedup``; the
generator's requests are counted from its own record (rows with prompt tokens).

    .venv/bin/python bench/bench_image_dedup.py [--images 1000000] [--radius 6]
"""

import argparse
import contextlib
import io
import os
import random
import time
from collections import Counter

import numpy as np
import polars as pl
from bench_fingerprints import CLEAN_PHOTOS, DATA, EVAL_PHOTOS, edits, regions  # bench/ is the script's folder
from PIL import Image

from genixer_ray.console import console
from genixer_ray.fingerprints import crop_phashes, fingerprint
from genixer_ray.image_dedup import (
    FINGERPRINTS_SCHEMA,
    duplicate_edges,
    find_duplicates,
    keys_table,
    partition_edges,
    shuffle_partitions,
    with_refs,
)


def fingerprints(images: dict[str, Image.Image]) -> pl.DataFrame:
    """The fingerprint files' columns of in-memory images, as the decode stage computes them (of their PNG bytes)."""
    rows = []
    for name, img in images.items():
        rgb = img.convert("RGB")
        buf = io.BytesIO()
        rgb.save(buf, "PNG")
        rows.append({"shard": 0, "image_id": name, "area": rgb.width * rgb.height, "file_bytes": len(buf.getvalue())}
                    | fingerprint(buf.getvalue(), rgb).columns()
                    | {"crop_phashes": crop_phashes(rgb)})
    return pl.DataFrame(rows, schema=FINGERPRINTS_SCHEMA)


def local_clusters(prints: pl.DataFrame, radius: int) -> dict[str, tuple[str, str]]:
    """The run's clustering without Ray: the keys' edges in one partition, the components."""
    return find_duplicates(partition_edges(pl.from_arrow(keys_table(prints)), radius), with_refs(prints))[0]


def quality(args) -> None:
    rng = random.Random(0)
    images, source = {}, {}
    for photo in EVAL_PHOTOS:
        for k, region in enumerate(regions(Image.open(DATA / photo).convert("RGB"), 12, rng)):
            name = f"{photo}-{k}"
            images[name] = source[name] = region
            for edit, copy in edits(region).items():
                images[f"{name}/{edit}"] = copy
                source[f"{name}/{edit}"] = region
    clean = []
    for photo in CLEAN_PHOTOS:
        for k, region in enumerate(regions(Image.open(DATA / photo).convert("RGB"), args.clean // len(CLEAN_PHOTOS), rng)):
            images[f"clean/{photo}-{k}"] = region
            clean.append(f"clean/{photo}-{k}")
    origin = {n: n.split("/")[0] if not n.startswith("clean/") else n for n in images}  # the region
    photo = {n: origin[n].removeprefix("clean/").rsplit("-", 1)[0] for n in images}  # the photo it was cut from
    prints = fingerprints(images)
    names = list(edits(Image.new("RGB", (64, 64))))
    five = [e for e in names if e != "horizontal flip"]  # the edits; a flip is shown, not counted
    print(f"quality: {len(EVAL_PHOTOS) * 12} regions x {len(names)} edits, {len(clean)} regions of other photos; {len(images)} images")
    print("| radius | " + " | ".join(names) + " | the five edits | merged with another photo's image "
          "| merged with another region of the same photo |")
    print("|---" * (len(names) + 4) + "|")
    for radius in args.radii:
        dups = local_clusters(prints, radius)
        rep = {n: dups.get(n, (n, ""))[0] for n in images}
        found = Counter()
        for n in images:
            if "/" in n and not n.startswith("clean/"):
                found[n.split("/", 1)[1]] += rep[n] == rep[origin[n]]
        regions_of: dict[str, set] = {}
        photos_of: dict[str, set] = {}
        for n in images:
            regions_of.setdefault(rep[n], set()).add(origin[n])
            photos_of.setdefault(rep[n], set()).add(photo[n])
        false = sum(1 for n in images if len(photos_of[rep[n]]) > 1)  # with an image of another photo
        overlapping = sum(1 for n in images if len(regions_of[rep[n]]) > 1 and len(photos_of[rep[n]]) == 1)
        n_edits = len(EVAL_PHOTOS) * 12
        cells = " | ".join(f"{found[e] / n_edits:.1%}" for e in names)
        print(f"| {radius} | {cells} | {sum(found[e] for e in five) / (len(five) * n_edits):.1%} | {false} ({false / len(images):.2%}) "
              f"| {overlapping} |")


def synthetic(n: int, planted: int, rng: np.random.Generator) -> tuple[pl.DataFrame, dict[str, tuple[str, int]]]:
    """``n`` fingerprints, ``planted`` of them copies of an earlier one with 0-6 bits flipped in each hash."""
    phash = rng.integers(0, 2**63, size=n, dtype=np.uint64) * 2 + rng.integers(0, 2, size=n, dtype=np.uint64)
    center = rng.integers(0, 2**63, size=n, dtype=np.uint64) * 2 + rng.integers(0, 2, size=n, dtype=np.uint64)
    copies = rng.choice(np.arange(n // 2, n), size=planted, replace=False)
    originals = rng.integers(0, n // 2, size=planted)
    truth = {}
    for c, o in zip(copies.tolist(), originals.tolist()):
        flips = int(rng.integers(0, 7))
        for arr in (phash, center):
            mask = 0
            for bit in rng.choice(64, size=flips, replace=False).tolist():
                mask |= 1 << bit
            arr[c] = arr[o] ^ np.uint64(mask)
        truth[f"i{c:07d}"] = (f"i{o:07d}", flips)
    ids = [f"i{k:07d}" for k in range(n)]
    crops = pl.Series(rng.integers(0, 2**63, size=(n, 3), dtype=np.uint64)).cast(pl.List(pl.UInt64))  # three border crops' hashes
    frame = pl.DataFrame({"shard": np.arange(n) // 1000, "image_id": ids, "area": np.full(n, 1000), "file_bytes": np.full(n, 50_000), "image_sha256": [f"s{k}" for k in range(n)],
                          "pixels_xxh3": [f"x{k}" for k in range(n)], "phash": phash, "phash_center": center, "crop_phashes": crops},
                         schema=FINGERPRINTS_SCHEMA)
    return frame, truth


def brute_force_pairs_per_s(hashes: np.ndarray, sample: int, radius: int) -> float:
    """Pairs a pairwise loop compares per second (numpy, one row against all later ones)."""
    h = hashes[:sample]
    t = time.perf_counter()
    found = 0
    for i in range(len(h) - 1):
        found += int((np.bitwise_count(h[i] ^ h[i + 1 :]) <= radius).sum())
    return (len(h) * (len(h) - 1) / 2) / (time.perf_counter() - t)


def speed(args) -> None:
    import ray

    frame, truth = synthetic(args.images, args.planted, np.random.default_rng(0))
    pairs_per_s = brute_force_pairs_per_s(frame["phash"].to_numpy(), args.sample, args.radius)
    brute = args.images * (args.images - 1) / 2 / pairs_per_s * 2  # both hashes
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)  # the cores there are, as a run's Ray
    took = []
    for _ in range(2):  # cold (Ray's workers start, import and load the compiled kernel), then warm, as after a run's fingerprint pass
        t = time.perf_counter()
        keys = ray.data.from_arrow(keys_table(frame)).repartition(max(1, args.images // 50_000))
        found_edges = duplicate_edges(keys, args.radius, shuffle_partitions(os.cpu_count())).iter_batches(batch_format="pyarrow")
        dups, _ = find_duplicates(pl.concat([pl.from_arrow(b) for b in found_edges]), with_refs(frame))
        took.append(time.perf_counter() - t)
    ray.shutdown()
    found = Counter()
    for copy, (orig, flips) in truth.items():
        root = dups.get(orig, (orig, ""))[0]
        found[flips] += dups.get(copy, (copy, ""))[0] == root
    wanted = Counter(f for _, f in truth.values())
    false = len(dups) - sum(found.values())
    print(f"speed: {args.images} fingerprints ({args.planted} planted copies), radius {args.radius}, Ray Data on this machine's cores")
    print(f"  brute force (both hashes, every pair, numpy, {pairs_per_s:,.0f} pairs/s on a {args.sample}-image sample): {brute:,.0f} s")
    for name, secs in zip(("cold", "warm"), took, strict=True):
        print(f"  clustering, Ray's workers {name}: {secs:.1f} s ({args.images / secs:,.0f} images/s); ratio {brute / secs:,.0f}x")
    print("  planted copies found, by bits flipped in each hash: "
          + ", ".join(f"{f}: {found[f] / wanted[f]:.1%}" for f in sorted(wanted)) + f"; other images merged: {max(false, 0)}")


def crawl_run(args) -> None:
    import tempfile
    from pathlib import Path

    from genixer_ray.config import load_config
    from genixer_ray.pipeline import run_generation
    from genixer_ray.store import RunStore

    rng = random.Random(1)
    folder = Path(tempfile.mkdtemp(prefix="bench-crawl-"))
    distinct = args.crawl - args.duplicates
    originals = [r for photo in EVAL_PHOTOS + CLEAN_PHOTOS
                 for r in regions(Image.open(DATA / photo).convert("RGB"), -(-distinct // 24), rng)][:distinct]
    for k, img in enumerate(originals):
        img.save(folder / f"img{k:05d}.png")
    for k in range(args.duplicates):
        edited = list(edits(originals[k % distinct]).values())[k % 5]
        edited.convert("RGB").save(folder / f"copy{k:05d}.jpg", quality=90)
    requests = {}
    for dedup in (False, True):
        cfg = load_config(None, [f"input.source={folder}", f"output.path={folder}-out", f"name=dedup-{dedup}", "output.shard_size=32",
                                 "engines.generator.backend=transformers", "sampling.max_tokens=8", f"image_dedup.enabled={dedup}"])
        summary = run_generation(cfg)
        rows = RunStore(summary.output).read_rows(["prompt_tokens", "error_code"])
        requests[dedup] = rows["prompt_tokens"].is_not_null().sum()
    print(f"run: {args.crawl} images, {args.duplicates} of them edited copies ({args.duplicates / args.crawl:.0%}); generator requests "
          f"without image dedup {requests[False]}, with {requests[True]}: {1 - requests[True] / requests[False]:.1%} fewer (target >= 29%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1_000_000)
    ap.add_argument("--planted", type=int, default=100_000)
    ap.add_argument("--sample", type=int, default=20_000, help="images the brute-force loop is timed on")
    ap.add_argument("--radius", type=int, default=4, help="the radius the speed run clusters at (image_dedup.radius's default)")
    ap.add_argument("--radii", type=lambda s: [int(x) for x in s.split(",")], default=[2, 4, 6, 8])
    ap.add_argument("--clean", type=int, default=1080)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--crawl", type=int, default=200, help="images of the run part (0: no run)")
    ap.add_argument("--duplicates", type=int, default=60, help="of them, edited copies of others")
    args = ap.parse_args()
    # The tables on the console; Ray's and the engines' output in the log file console() names.
    with console("bench-image-dedup", verbose=False) as con, contextlib.redirect_stdout(con.out):
        if not args.skip_quality:
            quality(args)
        speed(args)
        if args.crawl:
            crawl_run(args)


if __name__ == "__main__":
    main()
