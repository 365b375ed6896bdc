"""Fingerprints: how well the perceptual hashes find edited copies, and what they cost the decode stage.

Detection: evaluation images are regions of natural photos the repository ships (scikit-image's
data: astronaut, chelsea, coffee, rocket, ...), indexed as the decontamination index does
(``index_hashes``: the image and its border crops; with ``decontamination.mirrored``, those of the
image flipped too). Each is edited six ways (resized to half and back, JPEG quality 35, a 6% border
cut off each side, +20% brightness, a small corner watermark, flipped left to right) and looked up
by its ``phash`` and ``phash_center``; a hit is a hash within the radius of one of
its own image's index hashes. The clean images are regions of the other photos shipped (textures,
microscopy, documents: other content), each looked up the same way; any hit is a false positive.
Printed per edit and radius, with the decode stage's throughput with fingerprints against the same
stage without them and against a bare decode loop (ratios measured in this run, the arms alternating).

The embedding tier (``decontamination.embedding_model``): a CLIP forward pass per decoded image in
batches of ``--batch`` and the cosines against ``--evaluation`` random evaluation embeddings, per
image, against the decode stage's time per image (``--clip``'s architecture with random weights:
what it costs, not what it finds; only a randomly initialized CLIP can be built here). What it
finds, with ``--clip-model`` naming a CLIP with trained weights: the six edits and a 20% border
crop of each evaluation image, and the clean images, matched by cosine at each of ``--thresholds``.

Lookups: ``--crawl`` run images' fingerprints against an index of ``--evaluation`` evaluation images
(random 64-bit hashes, four crops of each kind per image as ``index_hashes`` gives; one crawl image in
100 an evaluation image's hash with 0-8 bits flipped) through the index the contamination stage
uses (``EvalIndex.match_images``, all at once and in batches of ``--batch`` rows as the read tasks call it), against
a brute-force numpy scan of every evaluation hash per run image (``np.bitwise_count``, both kinds),
timed on a sample in the same run; both give the same matches on that sample.

    .venv/bin/python bench/bench_fingerprints.py [--clean 1080] [--radii 6,8,10,12] [--crawl 1000000] [--clip-model DIR]
"""

import argparse
import dataclasses
import io
import random
import time
from pathlib import Path

import numpy as np
import skimage
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from genixer_ray.config import InputConfig
from genixer_ray.decontam.index import EvalIndex
from genixer_ray.fingerprints import crop_margin, hamming, index_hashes, perceptual_hashes
from genixer_ray.images import decode_full, downscale, embedded_image_paths
from genixer_ray.stages.decode import DecodeStage

DATA = Path(skimage.__file__).parent / "data"
EVAL_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "horse.png", "camera.png",
               "coins.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "color.png")
CLEAN_PHOTOS = ("brick.png", "grass.png", "gravel.png", "cell.png", "moon.png", "logo.png", "phantom.png", "clock_motion.png",
                "motorcycle_right.png", "page.png", "text.png", "microaneurysms.png")


def regions(img: Image.Image, n: int, rng: random.Random, min_side: int = 160) -> list[Image.Image]:
    """``n`` random regions of ``img`` (square to 10:7), at least ``min_side`` pixels wide."""
    w, h = img.size
    out = []
    for _ in range(n):
        side = rng.randint(min(min_side, w, h), min(w, h))
        rh = int(side * rng.uniform(0.7, 1.0))
        x, y = rng.randint(0, w - side), rng.randint(0, h - rh)
        out.append(img.crop((x, y, x + side, y + rh)))
    return out


def edits(img: Image.Image) -> dict[str, Image.Image]:
    """The five edited copies of ``img``."""
    w, h = img.size
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=35)
    marked = img.copy()
    draw = ImageDraw.Draw(marked)
    draw.rectangle((int(w * 0.82), int(h * 0.92), w - 3, h - 3), fill=(255, 255, 255))
    draw.text((int(w * 0.83), int(h * 0.925)), "(c)", fill=(0, 0, 0))
    return {
        "resize 1/2 and back": img.resize((w // 2, h // 2), Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.BILINEAR),
        "JPEG quality 35": Image.open(io.BytesIO(buf.getvalue())).convert("RGB"),
        "6% border crop": crop_margin(img, 0.06),
        "+20% brightness": ImageEnhance.Brightness(img).enhance(1.2),
        "corner watermark": marked,
        "horizontal flip": ImageOps.mirror(img),
    }


def near(query: tuple[int, int], indexed: tuple[int, int], radius: int) -> bool:
    """A match: either hash within ``radius`` of the indexed variant's."""
    return hamming(query[0], indexed[0]) <= radius or hamming(query[1], indexed[1]) <= radius


def photos(args) -> tuple[list[Image.Image], list[Image.Image]]:
    """The evaluation images and the clean images (regions of the photos, the same on every run)."""
    rng = random.Random(0)
    evals = [r for name in EVAL_PHOTOS for r in regions(Image.open(DATA / name).convert("RGB"), args.per_photo, rng)]
    per_clean = -(-args.clean // len(CLEAN_PHOTOS))
    return evals, [r for name in CLEAN_PHOTOS for r in regions(Image.open(DATA / name).convert("RGB"), per_clean, rng)]


def detection(args) -> None:
    evals, clean = photos(args)
    index = [(i, v) for i, img in enumerate(evals) for v in index_hashes(img)]
    mirrored = index + [(i, v) for i, img in enumerate(evals) for v in index_hashes(ImageOps.mirror(img))]
    edited = [{k: perceptual_hashes(e) for k, e in edits(img).items()} for img in evals]
    clean_hashes = [perceptual_hashes(c) for c in clean]
    print(f"detection: {len(evals)} evaluation images ({len(index)} index entries; {len(mirrored)} with decontamination.mirrored), "
          f"{len(clean)} clean images of other content")
    names = list(edited[0])
    print(f"{'index':>9} {'radius':>6} " + "".join(f"{n:>20}" for n in names) + f"{'all edits':>11}{'false pos.':>12}")
    for label, entries in (("plain", index), ("mirrored", mirrored)):
        for radius in args.radii:
            found = {n: sum(any(j == i and near(e[n], v, radius) for j, v in entries) for i, e in enumerate(edited)) for n in names}
            fp = sum(any(near(c, v, radius) for _, v in entries) for c in clean_hashes)
            total = sum(found.values()) / (len(names) * len(evals))
            cells = "".join(f"{found[n] / len(evals):>19.1%} " for n in names)
            print(f"{label:>9} {radius:>6} {cells}{total:>10.1%} {fp:>5} ({fp / len(clean):.2%})")


def decode_cost(args) -> None:
    """The decode stage with its fingerprints against the same stage without them (its
    ``fingerprint`` call swapped, for this arm only, for a constant: everything else of the stage
    runs), and against a bare decode loop (decode, downscale, the pixels as bytes; no rows), same
    photos; the arms alternate over ``--rounds`` rounds and each rate is the median."""
    import genixer_ray.stages.decode as decode_module
    from genixer_ray.fingerprints import Fingerprint

    rows = [{"shard": 0, "image_id": f"{k}-{n}", "source": f"inline:{k}", "data": p.read_bytes()}
            for n in range(args.repeat) for k, p in embedded_image_paths().items()]
    cfg = InputConfig()
    stage = DecodeStage(cfg)
    constant = Fingerprint("0" * 64, "0" * 32, 0, 0)

    def loop():
        for r in rows:
            downscale(decode_full(r["data"], max_pixels=cfg.max_pixels), max_side=cfg.max_side).tobytes()

    def without():
        real, decode_module.fingerprint = decode_module.fingerprint, lambda data, image: constant
        try:
            stage(rows)
        finally:
            decode_module.fingerprint = real

    arms = {"decode loop, no stage": loop, "decode stage, no fingerprints": without, "decode stage": lambda: stage(rows)}
    for fn in arms.values():
        fn()  # warm
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(args.rounds):  # the arms alternate, forwards then backwards, so drifts of the machine fall on each
        for name in list(arms)[:: 1 if r % 2 == 0 else -1]:
            t = time.perf_counter()
            arms[name]()
            rates[name].append(len(rows) / (time.perf_counter() - t))
    median = {name: float(np.median(rate)) for name, rate in rates.items()}
    base = median["decode stage, no fingerprints"]
    for name, rate in median.items():
        print(f"{name:<30} {rate:8.1f} images/s  {rate / base:.3f}x  (median of {args.rounds} rounds)")
    rounds = sorted(1 - f / d for f, d in zip(rates["decode stage"], rates["decode stage, no fingerprints"], strict=True))
    print(f"fingerprinting costs {1 - median['decode stage'] / base:.1%} of the decode stage's throughput ({rounds[0]:.1%} to "
          f"{rounds[-1]:.1%} in single rounds; against the bare loop {1 - median['decode stage'] / median['decode loop, no stage']:.1%}); "
          f"{len(rows)} decodes of the {len(embedded_image_paths())} bundled photos per round, max_side {cfg.max_side}")


def embedding_detection(args) -> None:
    """The embedding tier's detection table, with ``--clip-model`` (a CLIP with trained weights: a
    directory, ``ARCH/TAG`` or ``hf-hub:org/repo`` as ``decontamination.embedding_model`` takes it):
    each evaluation image's six edits and a 20% border crop matched by the index's own
    ``match_embeddings`` at each of ``--thresholds``, and the clean images' matches."""
    from genixer_ray.filters.clip import ClipScorer

    evals, clean = photos(args)
    scorer = ClipScorer(args.clip_model)

    def embed(images: list[Image.Image]) -> np.ndarray:
        return np.concatenate([scorer.embed([scorer.image_tensor(im) for im in images[at : at + 32]]) for at in range(0, len(images), 32)])

    index = dataclasses.replace(random_index(len(evals), np.random.default_rng(0)), embedding_model=np.array([args.clip_model]),
                                embeddings=embed(evals).astype(np.float16))
    copies = [edits(img) | {"20% border crop": crop_margin(img, 0.2)} for img in evals]
    names = list(copies[0])
    edited = {n: embed([c[n] for c in copies]) for n in names}
    clean_embedded = embed(clean)
    print(f"embedding tier ({args.clip_model}): {len(evals)} evaluation images, {len(clean)} clean images")
    print(f"{'threshold':>9} " + "".join(f"{n:>20}" for n in names) + f"{'false pos.':>12}")
    for threshold in args.thresholds:
        found = {n: sum(m is not None and m.item == f"e{i}" for i, m in enumerate(index.match_embeddings(edited[n], threshold)))
                 for n in names}
        fp = sum(m is not None for m in index.match_embeddings(clean_embedded, threshold))
        cells = "".join(f"{found[n] / len(evals):>19.1%} " for n in names)
        print(f"{threshold:>9} {cells}{fp:>5} ({fp / len(clean):.2%})")


def embedding_cost(args) -> None:
    """The embedding tier's cost in the read tasks: a CLIP forward pass per image (``--clip``'s
    architecture with random weights: the cost of the real one, not its quality) and the cosines
    against ``--evaluation`` evaluation embeddings, against the decode stage's time, same photos."""
    from genixer_ray.filters.clip import ClipScorer
    from genixer_ray.stages import row_image

    rows = [{"shard": 0, "image_id": f"{k}-{n}", "source": f"inline:{k}", "data": p.read_bytes()}
            for n in range(args.repeat // 4) for k, p in embedded_image_paths().items()]
    stage = DecodeStage(InputConfig())
    stage(rows[:8])  # warm
    t = time.perf_counter()
    decoded = stage(rows)
    decode_s = (time.perf_counter() - t) / len(rows)
    scorer = ClipScorer(args.clip, device="cpu")
    rng = np.random.default_rng(0)
    dims = scorer.embed([scorer.image_tensor(row_image(decoded[0]))]).shape[1]
    evaluation = rng.standard_normal((args.evaluation, dims)).astype(np.float32)
    index = dataclasses.replace(random_index(args.evaluation, rng), embedding_model=np.array([args.clip]),
                                embeddings=(evaluation / np.linalg.norm(evaluation, axis=1, keepdims=True)).astype(np.float16))
    embed_s = match_s = 0.0
    for at in range(0, len(decoded), args.batch):
        batch = decoded[at : at + args.batch]
        t = time.perf_counter()
        embeddings = scorer.embed([scorer.image_tensor(row_image(r)) for r in batch])
        embed_s += time.perf_counter() - t
        t = time.perf_counter()
        index.match_embeddings(embeddings, 0.95)
        match_s += time.perf_counter() - t
    embed_s, match_s = embed_s / len(decoded), match_s / len(decoded)
    print(f"embedding tier ({args.clip}, random weights, CPU, {args.batch} images per pass): CLIP {embed_s * 1e3:.1f} ms per image, "
          f"cosines against {args.evaluation:,} evaluation embeddings {match_s * 1e3:.2f} ms per image; the decode stage "
          f"{decode_s * 1e3:.1f} ms per image: the tier costs {(embed_s + match_s) / decode_s:.1f}x the decode stage's time "
          f"(its index: {index._embeddings.nbytes / 2**20:.0f} MiB per process)")


def random_index(n: int, rng: np.random.Generator) -> EvalIndex:
    """An index of ``n`` evaluation images with random hashes (no questions)."""
    ids = np.array([f"e{i}" for i in range(n)], dtype=str)
    hashes = rng.integers(0, 2**64 - 1, size=(2, n, 4), dtype=np.uint64, endpoint=True)
    empty = np.array([], dtype=str)
    return EvalIndex(benchmarks=np.full(n, "bench"), items=ids, image_sha256=ids, pixels_xxh3=ids, phash=hashes[0],
                     phash_center=hashes[1], questions=empty, question_benchmarks=empty, question_items=empty,
                     ngrams=np.array([], dtype=np.uint64), ngram_owner=np.array([], dtype=np.int64))


def lookups(args) -> None:
    """The contamination stage's lookups against a brute-force scan, same index, same rows."""
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    index = random_index(args.evaluation, rng)
    built = time.perf_counter() - t
    queries = rng.integers(0, 2**64 - 1, size=(2, args.crawl), dtype=np.uint64, endpoint=True)
    planted = rng.choice(args.crawl, args.crawl // 100, replace=False)
    for kind, table in enumerate((index.phash, index.phash_center)):
        flips = np.array([sum(1 << int(b) for b in rng.choice(64, int(k), replace=False)) for k in rng.integers(0, 9, len(planted))],
                         dtype=np.uint64)
        queries[kind, planted] = table[rng.integers(0, args.evaluation, len(planted)), rng.integers(0, 4, len(planted))] ^ flips
    rows = [{"image_sha256": "-", "pixels_xxh3": "-", "phash": int(a), "phash_center": int(b)} for a, b in queries.T]
    index.match_images(rows[:8], args.radius)  # compiles the search once
    flat = (index.phash.reshape(-1), index.phash_center.reshape(-1))  # owner-major: a position's owner is position // 4
    sample = rows[: args.brute_sample]
    t = time.perf_counter()
    brute = []
    for row in sample:
        nearest = []
        for hashes, q in zip(flat, (row["phash"], row["phash_center"]), strict=True):
            d = np.bitwise_count(hashes ^ np.uint64(q))
            at = int(d.argmin())  # the first position at the least distance: the first owner there
            nearest.append((int(d[at]), at // 4))
        best = min(nearest)
        brute.append(best if best[0] <= args.radius else None)
    per_brute = (time.perf_counter() - t) / len(sample)
    memory = sum(h.hashes.nbytes + h.positions.nbytes + h.offsets.nbytes for h in index._perceptual[0][1:])
    hashes = index.phash.nbytes + index.phash_center.nbytes
    print(f"lookups: {args.crawl:,} run images against {args.evaluation:,} evaluation images (4 hashes of each kind each), "
          f"radius {args.radius}; index built in {built:.2f} s, {hashes / args.evaluation:.0f} bytes of hashes per evaluation image "
          f"plus {(memory - hashes) / args.evaluation:.0f} of table positions and offsets")
    print(f"  brute-force scan (numpy, both kinds): {per_brute * 1e6:.0f} us per run image on a {len(sample):,}-image sample, "
          f"{per_brute * args.crawl:,.0f} s for all")
    for batch in (args.crawl, args.batch):
        t = time.perf_counter()
        found = [m for at in range(0, len(rows), batch) for m in index.match_images(rows[at : at + batch], args.radius)]
        took = time.perf_counter() - t
        same = brute == [(m.distance, int(m.item[1:])) if m else None for m in found[: len(sample)]]
        print(f"  multi-index, {batch:,} run images per call: {took:.1f} s, {took / args.crawl * 1e6:.1f} us per run image, "
              f"{sum(m is not None for m in found):,} matched ({len(planted):,} planted; the sample's matches as the scan's: {same}); "
              f"ratio {per_brute * args.crawl / took:.0f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-photo", type=int, default=12, help="evaluation regions per evaluation photo")
    p.add_argument("--clean", type=int, default=1080, help="clean images of other content (at least)")
    p.add_argument("--radii", type=lambda s: [int(x) for x in s.split(",")], default=[6, 8, 10, 12])
    p.add_argument("--repeat", type=int, default=16, help="passes over the bundled photos in one decode-cost round")
    p.add_argument("--rounds", type=int, default=15, help="decode-cost rounds, the two arms alternating")
    p.add_argument("--crawl", type=int, default=1_000_000, help="run images looked up against the index")
    p.add_argument("--evaluation", type=int, default=100_000, help="evaluation images in the lookup index")
    p.add_argument("--radius", type=int, default=8, help="the lookups' radius")
    p.add_argument("--batch", type=int, default=16, help="rows per lookup call, as the read tasks call it (pools.decode.batch_size)")
    p.add_argument("--brute-sample", type=int, default=2_000, help="run images the brute-force scan is timed on")
    p.add_argument("--clip", default="ViT-B-32", help="the embedding tier's open_clip architecture (random weights)")
    p.add_argument("--clip-model", help="a CLIP with trained weights (a directory, ARCH/TAG, hf-hub:org/repo): prints the "
                   "embedding tier's detection table too (none can be built on the development machine)")
    p.add_argument("--thresholds", type=lambda s: [float(x) for x in s.split(",")], default=[0.85, 0.9, 0.95, 0.97],
                   help="the embedding tier's cosine thresholds, with --clip-model")
    args = p.parse_args()
    np.random.seed(0)
    detection(args)
    if args.clip_model:
        embedding_detection(args)
    decode_cost(args)
    embedding_cost(args)
    lookups(args)


if __name__ == "__main__":
    main()
