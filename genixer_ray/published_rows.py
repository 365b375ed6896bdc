"""The published row: its columns and ``datasets`` features, the stored image, the WebDataset key.

One record per run row of a view (:mod:`genixer_ray.publish`): the image embedded (``{bytes,
path}``, the ``datasets`` ``Image`` feature), LLaVA's ``conversations``, the task, question,
answer, boxes normalized to [0, 1] and in pixels of the stored image, every score, the provenance
columns and the image's fingerprints. The types are written as ``datasets`` writes them (each
Parquet file's ``huggingface`` schema metadata, read by ``Features.from_arrow_schema``).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
from datetime import datetime

from genixer_ray.config import redact
from genixer_ray.export import finite, llava_record
from genixer_ray.fingerprints import FINGERPRINT_COLUMNS
from genixer_ray.schema import row_key
from genixer_ray.seeding import sample_id

_KEPT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}  # stored as they came, when upright


@functools.cache
def _features():
    """``[(column, datasets feature as a dict, arrow type)]`` of a published row, in order."""
    import pyarrow as pa

    def value(dtype: str, arrow):
        return {"dtype": dtype, "_type": "Value"}, arrow

    def seq(item):
        return {"feature": item[0], "_type": "List"}, pa.list_(item[1])

    string, f32, f64, i32 = value("string", pa.string()), value("float32", pa.float32()), value("float64", pa.float64()), value("int32", pa.int32())
    boxes, pixel_boxes = seq(seq(f32)), seq(seq(i32))
    turn = ({"from": string[0], "value": string[0]}, pa.struct([("from", pa.string()), ("value", pa.string())]))
    image = ({"_type": "Image"}, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    columns = [
        ("id", string), ("image", image), ("image_id", string), ("sample", i32), ("task", string),
        ("question", string), ("answer", string), ("conversations", seq(turn)), ("options", seq(string)), ("answer_letter", string),
        ("question_boxes", boxes), ("answer_boxes", boxes), ("points", boxes),
        ("question_boxes_px", pixel_boxes), ("answer_boxes_px", pixel_boxes), ("points_px", pixel_boxes),
        ("image_width", i32), ("image_height", i32),
        ("clip_score", f32), ("clip_raw_score", f32), ("clip_region_scores", seq(f32)), ("consistency_score", f32),
        ("judge_p_yes", f64), ("judge_paper_score", f64), ("keep", value("bool", pa.bool_())), ("reject_reasons", seq(string)),
        ("run_id", string), ("source", string), ("mode", string), ("prompt_profile", string), ("template_id", string),
        ("instruction", string), ("generator", string), ("generator_hash", string), ("judge_model", string), ("judge_hash", string),
        ("backend", string), ("seed", value("int64", pa.int64())), ("temperature", f32), ("top_p", f32),
        ("created_at", value("timestamp[us, tz=UTC]", pa.timestamp("us", tz="UTC"))),
        *((name, value("uint64", pa.uint64()) if "phash" in name else string) for name in FINGERPRINT_COLUMNS),
    ]
    return [(name, feature, arrow) for name, (feature, arrow) in columns]


@functools.cache
def published_schema():
    """The arrow schema of the published Parquet files, ``datasets``' features in its metadata."""
    import pyarrow as pa

    columns = _features()
    meta = {"info": {"features": {name: feature for name, feature, _ in columns}}}
    return pa.schema([(name, arrow) for name, _, arrow in columns]).with_metadata({"huggingface": json.dumps(meta)})


def sample_key(row: dict) -> str:
    """A row's WebDataset key: its id made of letters, digits, ``_`` and ``-`` (WebDataset splits a
    name at its first dot; a ``/`` would make a folder), with a digest of the id so keys stay unique."""
    sid = sample_id(*row_key(row))
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", sid).strip("_")[:64]
    return f"{safe}-{hashlib.sha256(sid.encode()).hexdigest()[:8]}"


def stored_image(data: bytes) -> tuple[bytes, str]:
    """The bytes a published row carries for an image, and their extension: the source file itself
    when it is an upright JPEG, PNG or WebP; otherwise (EXIF-rotated, other formats) the upright
    pixels as PNG, so that pixel boxes and every reader (``datasets`` applies EXIF orientation,
    WebDataset does not) agree on one picture."""
    from PIL import Image

    from genixer_ray.images import decode_full

    img = Image.open(io.BytesIO(data))
    if img.format in _KEPT_FORMATS and img.getexif().get(0x0112, 1) == 1:  # 0x0112: EXIF orientation
        return data, _KEPT_FORMATS[img.format]
    out = io.BytesIO()
    decode_full(data, max_pixels=img.size[0] * img.size[1]).save(out, format="PNG")
    return out.getvalue(), "png"


def _pixels(boxes: list | None, width: int, height: int) -> list | None:
    """Normalized boxes or points (``[x, y, ...]`` alternating) in whole pixels of a ``width`` x ``height`` image."""
    if boxes is None:
        return None
    return [[round(v * (width if i % 2 == 0 else height)) for i, v in enumerate(b)] for b in boxes]


def _clean_source(source: str) -> str:
    """A row's source without URL user information or query (a presigned URL's signature)."""
    return redact(source).split("?", 1)[0]


def published_row(row: dict, image: bytes, ext: str) -> dict:
    """The published record of one run row (all columns of :func:`published_schema`)."""
    key = sample_key(row)
    w, h = row.get("image_width"), row.get("image_height")
    out = {name: row.get(name) for name, _, _ in _features()}
    out |= {
        "id": sample_id(*row_key(row)), "image": {"bytes": image, "path": f"{key}.{ext}"}, "sample": row_key(row)[1],
        "task": row.get("parsed_task"), "conversations": llava_record(row, "")["conversations"], "source": _clean_source(row["source"]),
    }
    for name in ("question_boxes", "answer_boxes", "points"):
        out[f"{name}_px"] = _pixels(row.get(name), w, h) if w and h else None
    return out


def json_record(rec: dict) -> bytes:
    """A published record as the WebDataset sample's JSON (no image; NaN as null)."""
    out = {k: (v.isoformat() if isinstance(v, datetime) else finite(v)) for k, v in rec.items() if k != "image"}
    return json.dumps(out, ensure_ascii=False, allow_nan=False).encode()
