"""Image fingerprints through the real decode stage, on the bundled photos; no Ray."""

import hashlib
import io
import json
from datetime import UTC, datetime

import numpy as np
from PIL import Image, ImageEnhance

from genixer_ray.config import InputConfig
from genixer_ray.fingerprints import FINGERPRINT_VERSION, crop_margin, hamming, index_hashes, perceptual_hashes, phash
from genixer_ray.images import embedded_image_paths
from genixer_ray.stages.decode import DecodeStage
from genixer_ray.store import RunStore
from genixer_ray.summary import RunSummary, write_manifest


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def decoded(data: bytes, image_id: str = "x", **cfg) -> dict:
    (row,) = DecodeStage(InputConfig(**cfg))([{"shard": 0, "image_id": image_id, "source": f"inline:{image_id}", "data": data}])
    return row


def test_the_decode_stage_fingerprints_every_image_it_decodes():
    path = embedded_image_paths()["chelsea"]
    data = path.read_bytes()
    row = decoded(data, max_side=64)  # the fingerprints do not depend on the size the run decodes to
    assert row["status"] == "ok" and row["image_sha256"] == hashlib.sha256(data).hexdigest()
    assert row == decoded(data, max_side=64) and {k: row[k] for k in ("pixels_xxh3", "phash", "phash_center")} == {
        k: decoded(data, max_side=512)[k] for k in ("pixels_xxh3", "phash", "phash_center")
    }
    assert 0 <= row["phash"] < 2**64 and row["phash"] != row["phash_center"]
    # The same pixels in another file: another byte hash, the same pixel hash.
    img = Image.open(path).convert("RGB")
    again = decoded(encode(img, "PNG", compress_level=1))
    assert again["image_sha256"] != row["image_sha256"] and again["pixels_xxh3"] == row["pixels_xxh3"]
    assert decoded(b"not an image").get("image_sha256") is None  # a failed decode has no fingerprint


def test_perceptual_hashes_survive_edits_and_tell_photos_apart():
    photos = {k: Image.open(p).convert("RGB") for k, p in embedded_image_paths().items()}
    for name, img in photos.items():
        w, h = img.size
        h0 = phash(img)
        copies = {
            "jpeg35": Image.open(io.BytesIO(encode(img, "JPEG", quality=35))),
            "resized": img.resize((w // 2, h // 2)).resize((w, h)),
            "brighter": ImageEnhance.Brightness(img).enhance(1.2),
        }
        for edit, copy in copies.items():
            assert hamming(phash(copy), h0) <= 8, (name, edit)
        # A 6% border crop lands near the index's 6% variant, not necessarily near the whole image.
        cropped = phash(crop_margin(img, 0.06))
        assert min(hamming(cropped, full) for full, _ in index_hashes(img)) <= 8, name
        others = [phash(o) for k, o in photos.items() if k != name]
        assert min(hamming(h0, o) for o in others) > 8, name


def test_the_center_hash_ignores_a_corner_watermark():
    img = Image.open(embedded_image_paths()["astronaut"]).convert("RGB")
    marked = np.asarray(img).copy()
    h, w = marked.shape[:2]
    marked[int(h * 0.9) :, int(w * 0.8) :] = 255  # a white corner block, inside the centre hash's margin (a sixth)
    whole, center = perceptual_hashes(img)
    marked_whole, marked_center = perceptual_hashes(marked)
    assert marked_center == center and marked_whole != whole  # the block's pixels are read by the whole hash only


def test_a_runs_manifest_names_the_version_of_its_fingerprints(tmp_path):
    """Hashes of another version are not comparable: the manifest says which its rows carry."""
    store = RunStore(str(tmp_path / "run"))
    write_manifest(store, RunSummary(output=store.url), datetime.now(UTC))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["versions"]["fingerprints"] == str(FINGERPRINT_VERSION)
