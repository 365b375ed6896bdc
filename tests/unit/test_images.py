import io

import numpy as np
import pytest
from PIL import Image

from genixer_ray.images import DecodeError, decode_image, embedded_image_paths


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_embedded_images_are_real_photos():
    paths = embedded_image_paths()
    assert len(paths) >= 8
    for image_id, p in paths.items():
        arr = decode_image(p.read_bytes())
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, image_id
        assert min(arr.shape[:2]) >= 64 and arr.std() > 10, image_id  # not blank


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16", "1", "LA"])
def test_every_mode_becomes_rgb(mode):
    img = Image.new(mode, (20, 10))
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    arr = decode_image(encode(img, fmt))
    assert arr.shape == (10, 20, 3) and arr.dtype == np.uint8


def test_sixteen_bit_is_scaled_not_clipped():
    arr16 = (np.arange(200, dtype=np.uint16).reshape(10, 20) * 300)
    out = decode_image(encode(Image.fromarray(arr16), "PNG"))
    assert 0 < out[5, 10, 0] < 255


def test_palette_transparency_composites_on_white():
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0] * 256)
    img.info["transparency"] = 0
    out = decode_image(encode(img, "PNG", transparency=0))
    assert (out == 255).all()


def test_exif_orientation_applied():
    img = Image.new("RGB", (30, 10), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    out = decode_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert out.shape[:2] == (30, 10)


def test_resize_to_budget_keeps_aspect():
    out = decode_image(encode(Image.new("RGB", (1000, 500))), max_side=100)
    assert out.shape == (50, 100, 3)


@pytest.mark.parametrize(
    "data, code",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not_an_image"),
    ],
)
def test_bad_bytes_get_codes(data, code):
    with pytest.raises(DecodeError) as e:
        decode_image(data)
    assert e.value.code == code


def test_truncated_file_fails_at_decode_not_later():
    data = encode(Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG")
    with pytest.raises(DecodeError) as e:
        decode_image(data[: len(data) // 2])
    assert e.value.code == "truncated"


def test_pixel_budget_refuses_before_decoding():
    with pytest.raises(DecodeError) as e:
        decode_image(encode(Image.new("L", (400, 400))), max_pixels=100_000)
    assert e.value.code == "too_large"
