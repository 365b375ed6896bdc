"""Images: the embedded sample set and decoding bytes into RGB arrays.

Between stages images travel as ``uint8`` arrays of shape (H, W, 3), never as PIL objects: Ray
can size arrays in its memory accounting, not PIL images.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from genixer_ray.errors import RowError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# Real photographs that scikit-image's wheel ships in skimage/data: available on any machine that
# installed the project, with no download. Mixed modes on purpose (RGB, grayscale).
EMBEDDED_IMAGES = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle": "motorcycle_left.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "camera": "camera.png",
    "retina": "retina.jpg",
}


def embedded_image_paths() -> dict[str, Path]:
    """Return ``{image_id: path}`` for the bundled sample photos (sorted by id)."""
    import skimage

    root = Path(skimage.__file__).parent / "data"
    return {k: root / v for k, v in sorted(EMBEDDED_IMAGES.items())}


def write_photo_manifest(path: Path, n: int) -> str:
    """Write a JSONL manifest of ``n`` rows over the bundled photos, repeated under new ids
    (``img00000``, ...), for runs that need more rows than eight; returns its path."""
    import json

    photos = list(embedded_image_paths().values())
    path.write_text("\n".join(json.dumps({"image_id": f"img{i:05d}", "path": str(photos[i % len(photos)])}) for i in range(n)))
    return str(path)


class DecodeError(RowError):
    """An image that cannot be used; ``code`` is a stable machine-readable reason."""


def decode_image(data: bytes, *, max_pixels: int = 64_000_000, max_side: int | None = None) -> np.ndarray:
    """Decode image bytes into an RGB ``uint8`` array (see :func:`decode_image_sized`)."""
    return decode_image_sized(data, max_pixels=max_pixels, max_side=max_side)[0]


def decode_image_sized(
    data: bytes, *, max_pixels: int = 64_000_000, max_side: int | None = None, short_side: int | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode image bytes into an RGB ``uint8`` array, fully and with EXIF orientation applied,
    and the image's ``(width, height)`` before any downscale (after the orientation).

    Args:
        data: the encoded file's bytes.
        max_pixels: refuse images with more pixels than this (decompression bombs) before decoding.
        max_side: when set, downscale so the longer side is at most this many pixels.
        short_side: when set, downscale so the shorter side is at most this many pixels (never
            upscale); with ``max_side`` too, the smaller of the two scales applies.

    Raises:
        DecodeError: with code ``empty``, ``not_an_image``, ``too_large`` or ``truncated``.
    """
    img = decode_full(data, max_pixels=max_pixels)
    return downscale(img, max_side=max_side, short_side=short_side), img.size


def decode_full(data: bytes, *, max_pixels: int = 64_000_000):
    """Decode image bytes into a full-resolution RGB PIL image, EXIF orientation applied.

    Raises:
        DecodeError: see :func:`decode_image_sized`.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise DecodeError("empty", "file has no bytes")
    with warnings.catch_warnings():
        # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; we check our own
        # budget from the header instead, so its global limit must not interfere.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise DecodeError("not_an_image", "not a recognized image format") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise DecodeError("too_large", str(e)) from None
        w, h = img.size
        if w * h > max_pixels:
            raise DecodeError("too_large", f"{w}x{h} = {w * h} pixels exceeds the budget of {max_pixels}")
        if w == 0 or h == 0:
            raise DecodeError("not_an_image", f"degenerate size {w}x{h}")
        if Image.core.get_block_size() < w * h * 4:
            # Pillow keeps a larger image's rows in several memory blocks (16 MiB each by default);
            # in one block its pixels can be hashed in place (fingerprints.pixels_digest).
            Image.core.set_block_size(-(-w * h * 4 // 4096) * 4096)  # a whole number of pages
        try:
            img.load()  # open() is lazy: truncation only shows when pixels are read
            ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of an upright image
            return _to_rgb(img)
        except (OSError, SyntaxError, ValueError) as e:
            raise DecodeError("truncated", f"cannot decode pixels: {e}") from None


def downscale(img, *, max_side: int | None = None, short_side: int | None = None, as_array: bool = True):
    """A decoded PIL image downscaled as :func:`decode_image_sized` says: an RGB ``uint8`` array,
    or with ``as_array=False`` the PIL image itself (``img`` when no downscale was needed)."""
    from PIL import Image

    size = img.size
    scale = min(1.0, max_side / max(size) if max_side else 1.0, short_side / min(size) if short_side else 1.0)
    if scale < 1.0:
        new = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        img = img.resize(new, Image.Resampling.BICUBIC, reducing_gap=2.0)
    return np.asarray(img, dtype=np.uint8) if as_array else img


def _to_rgb(img):
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping everything to white.
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() or 1.0
        return Image.fromarray((arr * (255.0 / hi)).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")  # a palette may carry transparency
    if img.mode in ("RGBA", "LA", "PA"):
        # Composite on white: transparent pixels' colour values are arbitrary.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, F, ...
