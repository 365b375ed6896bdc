"""The output table: its columns, types and the error codes a row can carry.

Every input image ends in exactly one row: ``status == "ok"``, or ``status == "error"`` with an
``error_code`` from :data:`ERROR_CODES`, the ``error_stage`` that failed and a message.
"""

from __future__ import annotations

import polars as pl

ERROR_CODES = {
    # read / decode
    "missing": "the input path does not exist",
    "read_failed": "the input could not be read from storage",
    "empty": "the file has no bytes",
    "not_an_image": "the bytes are not a recognized image",
    "truncated": "the image header is readable but its pixels are not",
    "too_large": "more pixels than the configured budget (decompression bomb guard)",
    # generate
    "prompt_too_long": "prompt plus image tokens exceed the model's max_model_len",
    "request_rejected": "the engine refused this request",
}

GENERATION_SCHEMA = {
    "run_id": pl.String,
    "image_id": pl.String,
    "source": pl.String,
    "status": pl.String,
    "error_code": pl.String,
    "error_stage": pl.String,
    "error_message": pl.String,
    "instruction": pl.String,
    "text": pl.String,
    "token_ids": pl.List(pl.Int32),
    "logprobs": pl.List(pl.Float32),
    "finish_reason": pl.String,
    "prompt_tokens": pl.Int32,
    "generator": pl.String,
    "backend": pl.String,
    "seed": pl.Int64,
    "temperature": pl.Float32,
    "top_p": pl.Float32,
    "max_tokens": pl.Int32,
    "created_at": pl.Datetime("us", "UTC"),
}


def to_frame(rows: list[dict]) -> pl.DataFrame:
    """Build a frame with exactly :data:`GENERATION_SCHEMA`'s columns and types from row dicts."""
    for r in rows:
        unknown = set(r) - set(GENERATION_SCHEMA)
        if unknown:
            raise KeyError(f"row has columns outside the schema: {sorted(unknown)}")
        if r.get("error_code") is not None and r["error_code"] not in ERROR_CODES:
            raise ValueError(f"unknown error code {r['error_code']!r}")
    return pl.DataFrame(rows, schema=GENERATION_SCHEMA)
