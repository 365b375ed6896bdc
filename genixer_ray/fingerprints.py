"""Image fingerprints, computed once per image where it is decoded: exact and perceptual.

Four per image (columns of every row, see :data:`FINGERPRINT_COLUMNS`):

- ``image_sha256``: SHA-256 of the source file's bytes (the same file, byte for byte);
- ``pixels_xxh3``: a 128-bit hash (XXH3) of the decoded full-resolution RGB pixels and their
  size, after EXIF orientation (the same picture re-encoded losslessly, or with other metadata);
- ``phash``: a 64-bit perceptual hash of the whole image: pHash (Zauner, "Implementation and
  Benchmarking of Perceptual Image Hash Functions", 2010, in the form of the ``imagehash``
  library's ``phash``: the 8x8 lowest frequencies of the DCT of a 32x32 grayscale thumbnail, each
  bit "above the median"), with two changes: the thumbnail is made from a grid of sampled pixels
  rather than from every pixel (:func:`perceptual_hashes`), and its histogram is equalized first,
  which kept brightness changes within a few bits (BENCHMARKS.md, "Fingerprints");
- ``phash_center``: the same hash of the central two thirds of the image (a sixth off each side),
  which a corner watermark, a logo or a caption strip along an edge does not reach.

An evaluation image is indexed with the hashes of several border crops of itself
(:func:`index_hashes`), so that a copy cropped by a few percent still lands within a small Hamming
distance of one of them. Pillow, numpy and a numba kernel: no model weights, nothing downloaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import polars as pl

# Columns every row carries once its image is decoded (null where it could not be).
FINGERPRINT_COLUMNS = {
    "image_sha256": pl.String,
    "pixels_xxh3": pl.String,
    "phash": pl.UInt64,
    "phash_center": pl.UInt64,
}
# Changes whenever a hash's definition does, so that fingerprints stored by an earlier version (a
# cached decontamination index) are computed again rather than compared with today's.
FINGERPRINT_VERSION = 3
# Border crops an evaluation image is also indexed as (share of each side cut off): a crawl copy
# cropped by up to about 10% lies near one of them.
INDEX_CROPS = (0.0, 0.03, 0.06, 0.09)


def _rgbx(image) -> np.ndarray:
    # An RGB PIL image's pixels as an (h, w, 4) array where Pillow holds them (R, G, B and a fourth
    # byte that Pillow sets to 255), read in place through its Arrow export; an image whose rows
    # Pillow keeps in several memory blocks (larger than its block size;
    # images.decode_full makes one block) is packed into the same layout.
    import pyarrow as pa

    w, h = image.size
    try:
        pixels = pa.array(image).buffers()[-1]
    except ValueError:  # "Image rows are not contiguous in memory"
        pixels = None
    if pixels is None or pixels.size < w * h * 4:
        pixels = image.tobytes("raw", "RGBX")
    return np.frombuffer(pixels, np.uint8, count=w * h * 4).reshape(h, w, 4)


def perceptual_hashes(image) -> tuple[int, int]:
    """``(phash, phash_center)`` of a PIL ``image`` (or an RGB ``uint8`` array).

    Both read the image's pixels on a grid of 192x192 (the pixel nearest each grid point's
    centre), 36,864 pixels of any image rather than every one, where Pillow holds them: averaging
    every pixel down to the thumbnail (Pillow's box reduction) cost 0.13-1 ms a photo here, the
    sampled grid finds edited copies as often (BENCHMARKS.md, "Fingerprints"). The whole grid's
    luminance is summed in cells of 6x6 samples to the 32x32 thumbnail, the central 128x128
    samples' in cells of 4x4 (:mod:`genixer_ray.fingerprint_kernels`).
    """
    from PIL import Image

    from genixer_ray.fingerprint_kernels import hash_pair

    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    img = img if img.mode == "RGB" else img.convert("RGB")
    whole, center = hash_pair(_rgbx(img))
    return int(whole), int(center)


def phash(image) -> int:
    """The 64-bit perceptual hash of ``image`` (a PIL image, or an RGB ``uint8`` array), as an int.

    Equal for an image and its resized, re-encoded or slightly brightened copies, up to a few
    differing bits (compare with :func:`hamming`).
    """
    return perceptual_hashes(image)[0]


def crop_margin(image, margin: float):
    """``image`` (a PIL image) with ``margin`` of its width and height cut off each side."""
    w, h = image.size
    dx, dy = int(w * margin), int(h * margin)
    return image.crop((dx, dy, w - dx, h - dy)) if dx or dy else image


def hamming(a: int, b: int) -> int:
    """How many bits of two 64-bit hashes differ."""
    return (a ^ b).bit_count()


@dataclass(frozen=True)
class Fingerprint:
    """An image's fingerprints (see the module's docstring)."""

    image_sha256: str
    pixels_xxh3: str
    phash: int
    phash_center: int

    def columns(self) -> dict:
        """The row columns (:data:`FINGERPRINT_COLUMNS`)."""
        return {"image_sha256": self.image_sha256, "pixels_xxh3": self.pixels_xxh3, "phash": self.phash, "phash_center": self.phash_center}


def pixels_digest(image) -> str:
    """XXH3-128 of an RGB PIL image's pixels and size, as hex (the same pixels at another size
    differ).

    The pixels are hashed where Pillow holds them, 4 bytes a pixel (R, G, B and 255): packing them
    into 3-byte pixels first (``tobytes()``) took 60 ms for a 12-megapixel photo, the hash 5 ms
    (BENCHMARKS.md, "Fingerprints").

    Not SHA-256 as the file's bytes are: hashing every decoded pixel with SHA-256 cost 14-30% of the
    decode stage here, XXH3 about 1%. A 128-bit hash is an identity for this use (two different
    images collide with probability about 2^-64 among 2^32 images); nobody needs it to resist a
    forger, who would change one pixel rather than forge a collision.
    """
    import xxhash

    w, h = image.size
    digest = xxhash.xxh3_128(f"{w}x{h}:".encode())
    digest.update(_rgbx(image).data)
    return digest.hexdigest()


def fingerprint(data: bytes, image) -> Fingerprint:
    """The fingerprints of an image from its file's ``data`` and its decoded full-resolution RGB
    PIL ``image``. The perceptual hashes too read the full-resolution image, so no fingerprint
    depends on the size a run decodes images to."""
    full, center = perceptual_hashes(image)
    return Fingerprint(
        image_sha256=hashlib.sha256(data).hexdigest(), pixels_xxh3=pixels_digest(image), phash=full, phash_center=center,
    )


def crop_phashes(image) -> list[int]:
    """The ``phash`` of each border crop of a PIL ``image`` but the whole (:data:`INDEX_CROPS` after
    the first): image dedup keys a run image by them, as decontamination indexes an evaluation image."""
    return [perceptual_hashes(crop_margin(image, m))[0] for m in INDEX_CROPS[1:]]


def index_hashes(image) -> list[tuple[int, int]]:
    """``(phash, phash_center)`` of an evaluation image and of its border crops (:data:`INDEX_CROPS`)."""
    return [perceptual_hashes(crop_margin(image, margin)) for margin in INDEX_CROPS]


FINGERPRINT_TABLE = "fingerprints.parquet"


def write_fingerprint_table(store_url: str, storage_options: dict) -> int:
    """Write a run's fingerprint table: one row per image of its committed rows (``image_id``,
    ``source``, the image's size, :data:`FINGERPRINT_COLUMNS` and the evaluation image it matched,
    if any), sorted by image id, as ``fingerprints.parquet`` beside the manifest; return its rows.

    For deduplicating or decontaminating downstream without reading the rows (an image's samples
    share one entry); images that could not be decoded have null fingerprints.
    """
    from genixer_ray.store import RunStore

    store = RunStore(store_url, storage_options)
    columns = ["image_id", "source", "image_width", "image_height", *FINGERPRINT_COLUMNS,
               "contamination_tier", "contamination_benchmark", "contamination_item"]
    rows = store.read_rows(columns)
    table = rows.unique("image_id", keep="first", maintain_order=True).sort("image_id") if rows.height else rows
    store.write_frame(FINGERPRINT_TABLE, table)
    return table.height
