"""The output table: its columns, types and the error codes a row can carry.

Every (input image, sample) ends in exactly one row: ``status == "ok"``, ``status == "error"``
with an ``error_code`` from :data:`ERROR_CODES`, the ``error_stage`` that failed and a message, or
``status == "skipped"`` (left out on purpose, e.g. ``contaminated``) with its code, stage and message.
"""

from __future__ import annotations

import polars as pl

from genixer_ray.fingerprints import FINGERPRINT_COLUMNS

ERROR_CODES = {
    # input listing
    "path_escapes_root": "an input path lands outside input.root or the folder source (../, or a link out of it)",
    "bad_file_name": "a listed file's name is not valid UTF-8 (shown with U+FFFD)",
    # read / decode
    "missing": "the input path does not exist",
    "read_failed": "the input could not be read from storage",
    "empty": "the file has no bytes",
    "not_an_image": "the bytes are not a recognized image",
    "truncated": "the image header is readable but its pixels are not",
    "too_large": "more pixels than the configured budget (decompression bomb guard)",
    # decontamination and image dedup (status "skipped": left out on purpose, never generated on)
    "contaminated": "the image matches an image of an evaluation set (decontamination.sources)",
    "duplicate_image": "a near-duplicate of another image of the run, which is generated on instead (image_dedup; duplicate_of names it)",
    # generate
    "prompt_too_long": "prompt plus image tokens exceed the model's max_model_len",
    "request_rejected": "the engine refused this request",
    # parse (see genixer_ray.tasks.parse_output)
    "no_question_answer": "the output has no 'Question: ... Answer: ...'",
    "empty_field": "a question or an answer is empty",
    "bad_box": "a box outside [0, 1] or with x1 >= x2 or y1 >= y2",
    "bad_point": "a point outside [0, 1]",
    "too_few_options": "a multi-choice question without at least two (A)/(B) options",
    "answer_not_in_options": "a multi-choice answer naming no listed option",
    "no_box_in_answer": "REC / Q->CA output whose answer has no box",
    "no_box_in_question": "REG output whose question has no box",
    "no_region_in_question": "PointQA output whose question has no point or box",
    "too_few_turns": "a dialogue with fewer than two turns",
    "no_box_in_dialogue": "a referential dialogue without boxes",
}

# The codes of rows with status "skipped" (left out on purpose, not failed).
SKIP_CODES = frozenset({"contaminated", "duplicate_image"})


def code_counts(by_code: dict[str, int]) -> str:
    """``errors: a=1, ...`` (``none`` without any), then ``, skipped: b=2`` when rows were skipped:
    how the console lines show a run's rows by code."""
    def kv(items) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(items))

    errors = kv((k, v) for k, v in by_code.items() if k not in SKIP_CODES) or "none"
    skipped = kv((k, v) for k, v in by_code.items() if k in SKIP_CODES)
    return f"errors: {errors}" + (f", skipped: {skipped}" if skipped else "")


# Why a filter rejected a row (an error row's reason is its ``error_code``); see genixer_ray.filters.decide.
REJECT_REASONS = {
    "box_outside_image": "a box to crop is not within the image",
    "box_too_small": "a box is narrower or lower than filters.clip.min_box_side",
    "clip_below_threshold": "CLIP similarity below the task's threshold",
    "judge_failed": "the judge could not score the row (prompt too long, rejected)",
    "judge_below_threshold": "judge P(Yes) below filters.judge.threshold",
    "judge_said_no": "with filters.judge.score=paper, the judge's sampled reply does not say Yes",
    "judge_outside_band": "judge P(Yes) outside filters.judge.band",
    "judge_not_top_fraction": "judge P(Yes) not among the task's best filters.judge.fraction in its shard",
    "answer_not_in_options": "the multi-choice answer's letter is not a listed option",
    "consistency_failed": "the re-answers could not be generated",
    "inconsistent": "mean agreement of the re-answers below filters.consistency.threshold",
    "duplicate_sample": "a better sample of the same image asks nearly the same (filters.dedup; duplicate_of names it)",
}

_BOXES = pl.List(pl.List(pl.Float32))

# The rating axes (genixer_ray.filters.rating), each a pair of columns.
RATING_AXES = ("relevance", "correctness", "visual_dependency", "formatting", "grounding")

# What every row carries through every stage: where it belongs and how it stands.
ROW_COLUMNS = {
    "shard": pl.Int32,
    "image_id": pl.String,
    # Which of the image's ``samples_per_image`` samples (0-based); null before generation, where
    # a row is an image. Rows are keyed by (image_id, sample): see row_key.
    "sample": pl.Int32,
    "source": pl.String,
    # The image's size before any downscale (after EXIF orientation): boxes, normalized to it,
    # become pixels again without reopening the image (Shikra's export).
    "image_width": pl.Int32,
    "image_height": pl.Int32,
    # The image's fingerprints (genixer_ray.fingerprints), from the decode stage; null when the
    # image could not be decoded (and in runs written before they existed).
    **FINGERPRINT_COLUMNS,
    # The evaluation image this image matched (genixer_ray.decontam), if any: null otherwise.
    "contamination_tier": pl.String,  # "bytes", "pixels", "perceptual", "mirrored", "embedding", "question" or "question_ngram"
    "contamination_distance": pl.Int32,  # differing bits of the nearer perceptual hash (0: the other tiers)
    "contamination_cosine": pl.Float32,  # the embedding tier's cosine of the two images' CLIP embeddings
    "contamination_benchmark": pl.String,
    "contamination_item": pl.String,
    # "ok", "error" (failed: error_code says why) or "skipped" (left out on purpose: error_code says why)
    "status": pl.String,
    "error_code": pl.String,
    "error_stage": pl.String,
    "error_message": pl.String,
}

# A plan file's rows (genixer_ray.store): each input row, its shard, and a listing error if any.
PLAN_SCHEMA = {
    "shard": pl.Int32,
    "image_id": pl.String,
    "source": pl.String,
    "data": pl.Binary,
    "error_code": pl.String,
    "error_message": pl.String,
}

# Between the decode tasks and the generator actors: the image as raw RGB bytes (and, for a
# near-duplicate image left out before it was read, the image generated in its place).
DECODED_SCHEMA = {**ROW_COLUMNS, "duplicate_of": pl.String, "pixels": pl.Binary, "height": pl.Int32, "width": pl.Int32}

GENERATION_SCHEMA = {
    "run_id": pl.String,
    **ROW_COLUMNS,
    "mode": pl.String,
    "task": pl.String,  # requested task (task-specific mode), else null
    "prompt_profile": pl.String,  # genixer_ray.prompts: whose task sentences and separators
    "template_id": pl.String,
    "instruction": pl.String,
    "text": pl.String,
    "token_ids": pl.List(pl.Int32),
    "logprobs": pl.List(pl.Float32),
    "finish_reason": pl.String,
    "prompt_tokens": pl.Int32,
    "cached_tokens": pl.Int32,  # of the prompt's tokens, those vLLM's prefix cache served (null: transformers)
    "engine_running": pl.Float32,  # mean sequences the engine ran while this row's request ran
    "parsed_task": pl.String,  # the task the output was parsed as (inferred in task-agnostic mode)
    "question": pl.String,
    "answer": pl.String,
    "options": pl.List(pl.String),
    "answer_letter": pl.String,
    "turns": pl.List(pl.Struct({"question": pl.String, "answer": pl.String})),
    "question_boxes": _BOXES,
    "answer_boxes": _BOXES,
    "points": _BOXES,
    "generator": pl.String,
    "generator_hash": pl.String,
    "backend": pl.String,
    "seed": pl.Int64,
    "temperature": pl.Float32,
    "top_p": pl.Float32,
    "max_tokens": pl.Int32,
    "created_at": pl.Datetime("us", "UTC"),
}

# Filters (genixer_ray.filters): each score, the rule it was judged by, the decision and its
# reason; null where the filter did not run on the row.
FILTER_SCHEMA = {
    "clip_score": pl.Float32,
    "clip_raw_score": pl.Float32,  # the paper's dot product of unnormalized features (lowest region)
    "clip_region_scores": pl.List(pl.Float32),
    "clip_threshold": pl.Float32,
    "clip_rule": pl.String,  # "cosine>=0.2" or "raw>=60": the score the threshold applied to
    "clip_reason": pl.String,
    "clip_pass": pl.Boolean,
    "consistency_score": pl.Float32,
    "consistency_answers": pl.List(pl.String),
    "consistency_threshold": pl.Float32,
    "consistency_reason": pl.String,
    "consistency_pass": pl.Boolean,
    "judge_p_yes": pl.Float64,
    "judge_paper_score": pl.Float64,  # the Genixer script's score of a sampled reply (filters/judge.py)
    "judge_paper_reply": pl.String,
    "judge_model": pl.String,
    "judge_hash": pl.String,  # the judge checkpoint's fingerprint, as generator_hash (engines.base.checkpoint_hash)
    "judge_rule": pl.String,
    "judge_reason": pl.String,
    "judge_pass": pl.Boolean,
    # Ratings (genixer_ray.filters.rating): per axis the expected rating 1-5 and the probability
    # mass the five digits held (its confidence); null where the axis was not asked.
    **{f"rating_{axis}{part}": pl.Float32 for axis in RATING_AXES for part in ("", "_confidence")},
    "rating_model": pl.String,
    "rating_hash": pl.String,
    "rating_prompt_version": pl.String,  # a digest of the axes' prompts as asked
    "rating_reason": pl.String,  # rating_failed: the engine could not serve an axis of the row
    "dedup_pass": pl.Boolean,
    "dedup_reason": pl.String,
    "duplicate_of": pl.String,  # the sample kept in this row's place ({image_id}#{sample}), or the image generated in its place
    "keep": pl.Boolean,
    "reject_reasons": pl.List(pl.String),
}
GENERATION_SCHEMA |= FILTER_SCHEMA

# Between generator actors and filter actors: the rows plus the decoded image they are judged on.
SCORING_SCHEMA = {**GENERATION_SCHEMA, "pixels": pl.Binary, "height": pl.Int32, "width": pl.Int32}


def row_key(row: dict) -> tuple[str, int]:
    """A row's identity, ``(image_id, sample)``; rows of runs written before samples existed are sample 0."""
    return row["image_id"], row.get("sample") or 0


def to_frame(rows: list[dict]) -> pl.DataFrame:
    """Build a frame with exactly :data:`GENERATION_SCHEMA`'s columns and types from row dicts."""
    for r in rows:
        unknown = set(r) - set(GENERATION_SCHEMA)
        if unknown:
            raise KeyError(f"row has columns outside the schema: {sorted(unknown)}")
        if r.get("error_code") is not None and r["error_code"] not in ERROR_CODES:
            raise ValueError(f"unknown error code {r['error_code']!r}")
        if unknown := set(r.get("reject_reasons") or []) - set(REJECT_REASONS) - set(ERROR_CODES):
            raise ValueError(f"unknown reject reason(s) {sorted(unknown)}")
    return pl.DataFrame(rows, schema=GENERATION_SCHEMA)
