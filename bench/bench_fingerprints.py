"""Fingerprints: how well the perceptual hashes find edited copies, and what they cost the decode stage.

Detection: evaluation images are regions of natural photos the repository ships (scikit-image's
data: astronaut, chelsea, coffee, rocket, ...), indexed as the decontamination index does
(``index_hashes``: the image and its border crops). Each is edited five ways (resized to half and
back, JPEG quality 35, a 6% border cut off each side, +20% brightness, a small corner watermark)
and looked up by its ``phash`` and ``phash_center``; a hit is a hash within the radius of one of
its own image's index hashes. The clean images are regions of the other photos shipped (textures,
microscopy, documents: other content), each looked up the same way; any hit is a false positive.
Printed per edit and radius, with the decode stage's throughput with fingerprints against the same
decode without them (ratio measured in this run).

    .venv/bin/python bench/bench_fingerprints.py [--clean 1080] [--radii 6,8,10,12]
"""

import argparse
import io
import random
import time
from pathlib import Path

import numpy as np
import skimage
from PIL import Image, ImageDraw, ImageEnhance

from genixer_ray.config import InputConfig
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
    }


def near(query: tuple[int, int], indexed: tuple[int, int], radius: int) -> bool:
    """A match: either hash within ``radius`` of the indexed variant's."""
    return hamming(query[0], indexed[0]) <= radius or hamming(query[1], indexed[1]) <= radius


def detection(args) -> None:
    rng = random.Random(0)
    evals = [r for name in EVAL_PHOTOS for r in regions(Image.open(DATA / name).convert("RGB"), args.per_photo, rng)]
    per_clean = -(-args.clean // len(CLEAN_PHOTOS))
    clean = [r for name in CLEAN_PHOTOS for r in regions(Image.open(DATA / name).convert("RGB"), per_clean, rng)]
    index = [(i, v) for i, img in enumerate(evals) for v in index_hashes(img)]
    edited = [{k: perceptual_hashes(e) for k, e in edits(img).items()} for img in evals]
    clean_hashes = [perceptual_hashes(c) for c in clean]
    print(f"detection: {len(evals)} evaluation images ({len(index)} index entries), {len(clean)} clean images of other content")
    names = list(edited[0])
    print(f"{'radius':>6} " + "".join(f"{n:>20}" for n in names) + f"{'all edits':>11}{'false pos.':>12}")
    for radius in args.radii:
        found = {n: sum(any(j == i and near(e[n], v, radius) for j, v in index) for i, e in enumerate(edited)) for n in names}
        fp = sum(any(near(c, v, radius) for _, v in index) for c in clean_hashes)
        total = sum(found.values()) / (len(names) * len(evals))
        cells = "".join(f"{found[n] / len(evals):>19.1%} " for n in names)
        print(f"{radius:>6} {cells}{total:>10.1%} {fp:>5} ({fp / len(clean):.2%})")


def decode_cost(args) -> None:
    """The decode stage with its fingerprints against the same decode without them (the stage as it
    was before fingerprints: decode, downscale, the pixels as bytes), same photos."""
    rows = [{"shard": 0, "image_id": f"{k}-{n}", "source": f"inline:{k}", "data": p.read_bytes()}
            for n in range(args.repeat) for k, p in embedded_image_paths().items()]
    cfg = InputConfig()
    stage = DecodeStage(cfg)

    def plain():
        for r in rows:
            downscale(decode_full(r["data"], max_pixels=cfg.max_pixels), max_side=cfg.max_side).tobytes()

    timings = {}
    for name, fn in (("decode only", plain), ("decode + fingerprints", lambda: stage(rows))):
        fn()  # warm
        t = time.perf_counter()
        fn()
        timings[name] = len(rows) / (time.perf_counter() - t)
    base = timings["decode only"]
    for name, rate in timings.items():
        print(f"{name:<24} {rate:8.1f} images/s  {rate / base:.3f}x")
    print(f"fingerprinting costs {1 - timings['decode + fingerprints'] / base:.1%} of the decode stage's throughput "
          f"({len(rows)} decodes of the {len(embedded_image_paths())} bundled photos, max_side {cfg.max_side})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-photo", type=int, default=12, help="evaluation regions per evaluation photo")
    p.add_argument("--clean", type=int, default=1080, help="clean images of other content (at least)")
    p.add_argument("--radii", type=lambda s: [int(x) for x in s.split(",")], default=[6, 8, 10, 12])
    p.add_argument("--repeat", type=int, default=8, help="decode-cost rounds over the bundled photos")
    args = p.parse_args()
    np.random.seed(0)
    detection(args)
    decode_cost(args)


if __name__ == "__main__":
    main()
