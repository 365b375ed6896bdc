import io

import numpy as np
import pytest
from PIL import Image

from genixer_ray.images import DecodeError, decode_image, decode_image_sized, embedded_image_paths


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


def test_sized_for_the_consumer_by_the_shorter_side_within_the_longer_cap():
    img = encode(Image.new("RGB", (1024, 768)))
    assert decode_image_sized(img, max_side=1024, short_side=336)[0].shape == (336, 448, 3)  # LLaVA-1.5's 336 px
    assert decode_image_sized(img, max_side=300, short_side=336)[0].shape == (225, 300, 3)  # the cap still bounds
    arr, size = decode_image_sized(encode(Image.new("RGB", (200, 100))), short_side=336)
    assert arr.shape == (100, 200, 3) and size == (200, 100)  # never upscaled
    from genixer_ray.config import InputConfig
    from genixer_ray.stages.decode import DecodeStage

    row = DecodeStage(InputConfig(short_side=336))([{"shard": 0, "image_id": "a", "source": "inline:a", "data": img}])[0]
    assert (row["height"], row["width"], row["image_height"], row["image_width"]) == (336, 448, 768, 1024)


# llava-hf/llava-1.5-7b-hf's preprocessor_config.json as published (transformers' CLIPImageProcessor).
LLAVA_15_PREPROCESSOR = {
    "crop_size": {"height": 336, "width": 336}, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
    "do_rescale": True, "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor", "image_std": [0.26862954, 0.26130258, 0.27577711],
    "processor_class": "LlavaProcessor", "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 336},
}


def test_rows_carry_what_the_run_s_models_take(tmp_path, tiny_models):
    import json

    from genixer_ray.config import load_config
    from genixer_ray.models import input_side
    from genixer_ray.pipeline import decode_input

    llava = tmp_path / "llava-1.5"
    llava.mkdir()
    (llava / "preprocessor_config.json").write_text(json.dumps(LLAVA_15_PREPROCESSOR))
    dynamic = tmp_path / "dynamic"  # a processor with dynamic resolution (no fixed size)
    dynamic.mkdir()
    (dynamic / "preprocessor_config.json").write_text(json.dumps({"min_pixels": 3136, "max_pixels": 12845056}))
    assert (input_side(str(llava)), input_side("tiny"), input_side(str(dynamic)), input_side("llava-hf/llava-1.5-7b-hf")) == (336, 56, None, None)

    def side(*over):
        return decode_input(load_config(None, list(over))).short_side

    assert side() == 56  # the tiny generator's processor (transformers 5's processor_config.json)
    assert side(f"engines.generator.model={llava}") == 336
    assert side("filters.judge.enabled=true", f"engines.judge.model={llava}") == 336  # the larger of generator and judge
    assert side("filters.clip.enabled=true") is None  # CLIP crops of small regions need the pixels
    assert side(f"engines.generator.model={dynamic}") is None and side("input.short_side=500") == 500
