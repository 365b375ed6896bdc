"""Image fingerprints, computed once per image where it is decoded: exact and perceptual.

Four per image (columns of every row, see :data:`FINGERPRINT_COLUMNS`):

- ``image_sha256``: SHA-256 of the source file's bytes (the same file, byte for byte);
- ``pixels_xxh3``: a 128-bit hash (XXH3) of the decoded full-resolution RGB pixels and their
  size, after EXIF orientation (the same picture re-encoded losslessly, or with other metadata);
- ``phash``: a 64-bit perceptual hash of the whole image: pHash (Zauner, "Implementation and
  Benchmarking of Perceptual Image Hash Functions", 2010; the form of the ``imagehash`` library's
  ``phash``: the 8x8 lowest frequencies of the DCT of a 32x32 grayscale thumbnail, each bit
  "above the median"), with the thumbnail's histogram equalized first, which kept brightness
  changes within a few bits (BENCHMARKS.md, "Fingerprints");
- ``phash_center``: the same hash of the central 70% of the image (15% off each side), which
  a corner watermark, a logo or a caption strip along an edge does not reach.

An evaluation image is indexed with the hashes of several border crops of itself
(:func:`index_hashes`), so that a copy cropped by a few percent still lands within a small Hamming
distance of one of them. Plain numpy and Pillow: no model weights, nothing downloaded.
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
FINGERPRINT_VERSION = 2
CENTER_MARGIN = 0.15  # phash_center: this share of each side is left out
# Border crops an evaluation image is also indexed as (share of each side cut off): a crawl copy
# cropped by up to about 10% lies near one of them.
INDEX_CROPS = (0.0, 0.03, 0.06, 0.09)

_THUMB = 32  # the DCT's input side
_BITS = 8  # its lowest 8x8 frequencies make the 64 bits
_WORK = 64  # one grayscale thumbnail of this side serves both hashes


def _dct_basis(n: int, k: int) -> np.ndarray:
    # The first k rows of the orthonormal DCT-II matrix of size n (what scipy.fft.dct(norm="ortho") applies).
    i = np.arange(n)
    basis = np.cos(np.pi * (2 * i[None, :] + 1) * np.arange(k)[:, None] / (2 * n)) * np.sqrt(2.0 / n)
    basis[0] /= np.sqrt(2.0)
    return basis


def _area_matrix(src: int, dst: int) -> np.ndarray:
    # Resampling by pixel-area averaging as a (dst x src) matrix: out = M @ img @ M.T.
    edges = np.linspace(0.0, src, dst + 1)
    m = np.zeros((dst, src))
    for r in range(dst):
        for c in range(int(edges[r]), min(src, int(np.ceil(edges[r + 1])))):
            m[r, c] = min(edges[r + 1], c + 1) - max(edges[r], c)
    return m / m.sum(axis=1, keepdims=True)


_BASIS = _dct_basis(_THUMB, _BITS)
_MARGIN_PX = int(_WORK * CENTER_MARGIN)
_FULL = _area_matrix(_WORK, _THUMB)
_CENTER = _area_matrix(_WORK - 2 * _MARGIN_PX, _THUMB)
_WEIGHTS = np.array([1 << (63 - i) for i in range(64)], dtype=np.uint64)


def _hash32(thumb: np.ndarray) -> int:
    """pHash bits of a 32x32 grayscale thumbnail, its histogram equalized first."""
    flat = np.sort(thumb, axis=None)
    equalized = np.searchsorted(flat, thumb, side="right").astype(np.float64)  # each value's rank: its CDF
    low = _BASIS @ equalized @ _BASIS.T
    bits = (low > np.median(low)).flatten()
    return int(_WEIGHTS[bits].sum(dtype=np.uint64))


def perceptual_hashes(image) -> tuple[int, int]:
    """``(phash, phash_center)`` of a PIL ``image`` (or an RGB ``uint8`` array).

    Both come from one 64x64 grayscale thumbnail, made with a fast box reduction first
    (``reducing_gap``), so a photo is read once at full resolution: the whole thumbnail averaged
    down to 32x32, and its central 70% averaged down to 32x32.
    """
    from PIL import Image

    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    work = np.asarray(img.resize((_WORK, _WORK), Image.Resampling.BILINEAR, reducing_gap=1.0).convert("L"), dtype=np.float64)
    center = work[_MARGIN_PX : _WORK - _MARGIN_PX, _MARGIN_PX : _WORK - _MARGIN_PX]
    return _hash32(_FULL @ work @ _FULL.T), _hash32(_CENTER @ center @ _CENTER.T)


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

    The pixels are hashed where Pillow holds them, 4 bytes a pixel (R, G, B and a fourth byte that
    Pillow sets to 255 in RGB images), read in place through its Arrow export: packing them into
    3-byte pixels first (``tobytes()``) took 60 ms for a 12-megapixel photo, the hash 5 ms
    (BENCHMARKS.md, "Fingerprints"). An image whose rows Pillow keeps in several memory blocks
    (larger than its block size; :func:`~genixer_ray.images.decode_full` makes one block) is packed
    into the same 4-byte layout instead, which gives the same digest.

    Not SHA-256 as the file's bytes are: hashing every decoded pixel with SHA-256 cost 14-30% of the
    decode stage here, XXH3 about 1%. A 128-bit hash is an identity for this use (two different
    images collide with probability about 2^-64 among 2^32 images); nobody needs it to resist a
    forger, who would change one pixel rather than forge a collision.
    """
    import pyarrow as pa
    import xxhash

    w, h = image.size
    digest = xxhash.xxh3_128(f"{w}x{h}:".encode())
    try:
        pixels = pa.array(image).buffers()[-1]
    except ValueError:  # "Image rows are not contiguous in memory"
        pixels = None
    digest.update(memoryview(pixels)[: w * h * 4] if pixels is not None and pixels.size >= w * h * 4 else image.tobytes("raw", "RGBX"))
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
