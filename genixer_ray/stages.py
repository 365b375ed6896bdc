"""Pipeline stages: plain callables over a batch of rows, runnable and testable without Ray.

A batch is a list of row dicts. Each stage returns exactly one row per input row, in order,
keeping ``shard``, ``image_id`` and ``sample``; the generate stage alone turns each image into
``samples_per_image`` rows (samples 0, 1, ...), in order. A row that fails gets
``status = "error"`` with a code and the stage's name, and passes through later stages untouched. Images travel between stages as raw
RGB bytes plus height and width (Ray can size bytes; it cannot size PIL objects). Outcomes are
counted from the rows themselves (by status and error code) where shards are committed, since a
stage's own counters would stay in whichever Ray worker ran it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from genixer_ray.config import InputConfig, RunConfig
from genixer_ray.engines.base import GenerationRequest, checkpoint_hash, get_generator
from genixer_ray.images import DecodeError, decode_image_sized
from genixer_ray.prompts import choose_prompts
from genixer_ray.seeding import derive_seed, sample_id
from genixer_ray.tasks import ParseError, parse_output


class StageContractError(RuntimeError):
    """A stage broke the contract: one row out per row in, same image ids, same order."""


def fail(row: dict, stage: str, code: str, message: str) -> dict:
    """``row`` marked as failed at ``stage`` with an error ``code`` and ``message``."""
    return {**row, "status": "error", "error_stage": stage, "error_code": code, "error_message": message}


class DecodeStage:
    """Read each row's bytes (inline ``data`` or ``source`` through fsspec) and decode them.

    Output rows hold ``pixels`` (RGB bytes), ``height`` and ``width`` (decoded), ``image_width`` and
    ``image_height`` (the original, before any downscale), or an error row with code
    ``missing``, ``read_failed``, ``empty``, ``not_an_image``, ``truncated`` or ``too_large``.
    Rows already failed at listing (``error_code`` set) become error rows of stage ``input``.
    """

    name = "decode"

    def __init__(self, cfg: InputConfig):
        self.cfg = cfg

    def _read(self, source: str) -> bytes:
        import fsspec

        with fsspec.open(source, "rb", **self.cfg.storage_options) as f:
            return f.read()

    def _one(self, row: dict) -> dict:
        data = row.get("data")  # inline bytes are consumed here, not carried further
        row = {k: v for k, v in row.items() if k != "data"} | {"status": "ok"}
        if row.get("error_code"):
            return fail(row, "input", row["error_code"], row.get("error_message") or "")
        try:
            if data is None:
                data = self._read(row["source"])
        except FileNotFoundError:
            return fail(row, self.name, "missing", f"no such file: {row['source']}")
        except Exception as e:  # permissions, network, a directory where a file was expected, ...
            return fail(row, self.name, "read_failed", f"{type(e).__name__}: {e}")
        try:
            image, (w, h) = decode_image_sized(
                data, max_pixels=self.cfg.max_pixels, max_side=self.cfg.max_side, short_side=self.cfg.short_side
            )
        except DecodeError as e:
            return fail(row, self.name, e.code, e.message)
        return row | {"pixels": image.tobytes(), "height": image.shape[0], "width": image.shape[1], "image_width": w, "image_height": h}

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Decode a batch; every failure becomes an error row, the batch never raises for a row."""
        return [self._one(row) for row in batch]


def row_image(row: dict) -> np.ndarray:
    """The decoded RGB image of a row that passed :class:`DecodeStage`."""
    return np.frombuffer(row["pixels"], dtype=np.uint8).reshape(row["height"], row["width"], 3)


IMAGE_COLUMNS = ("pixels", "height", "width")


def drop_image(batch: list[dict]) -> list[dict]:
    """The rows without their decoded image (what is written: the source names the image)."""
    return [{k: v for k, v in r.items() if k not in IMAGE_COLUMNS} for r in batch]


class GenerateStage:
    """Choose each sample's instruction and run the generator; the engine is built once per process.

    Each image row becomes ``samples_per_image`` rows (``sample`` 0, 1, ...) sharing its decoded
    image; an image's requests are handed to the engine back to back, so its tokens are reused
    from the engine's caches.
    """

    name = "generate"

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.generator = get_generator(cfg.generator)
        self.generator_hash = checkpoint_hash(self.generator.model_path)
        self.profile = cfg.prompts.build()
        self.samples_per_row = cfg.samples_per_image

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Generate for every sample of every ``ok`` row; error rows pass through, once per sample; rows keep their image."""
        s, cfg = self.cfg.sampling, self.cfg
        now = datetime.now(UTC)
        out: list[dict[str, Any]] = []
        todo: list[tuple[int, GenerationRequest]] = []
        for row in batch:
            image = row_image(row) if row["status"] == "ok" else None
            choices = choose_prompts(
                row["image_id"], self.samples_per_row, seed=s.seed, mode=cfg.mode, task_mix=cfg.task_mix, profile=self.profile
            )
            for k, choice in enumerate(choices):
                seed = derive_seed(s.seed, sample_id(row["image_id"], k))
                new = dict(row)
                new.update(
                    sample=k, run_id=cfg.name, mode=cfg.mode, task=choice.task, prompt_profile=self.profile.name,
                    template_id=choice.template_id, instruction=choice.instruction, generator=self.generator.model_path,
                    generator_hash=self.generator_hash, backend=self.generator.backend, seed=seed,
                    temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, created_at=now,
                )
                if image is not None:
                    todo.append((len(out), GenerationRequest(image, choice.instruction, s.model_copy(update={"seed": seed}))))
                out.append(new)
        results = self.generator.generate([r for _, r in todo])
        for (i, _), res in zip(todo, results):
            out[i].update(
                text=res.text, token_ids=res.token_ids, logprobs=res.logprobs,
                finish_reason=res.finish_reason, prompt_tokens=res.prompt_tokens,
                cached_tokens=res.cached_tokens, engine_running=res.engine_running,
            )
            if res.error_code:
                out[i] = fail(out[i], self.name, res.error_code, res.error or "")
        return out


class ParseStage:
    """Parse each generated text into typed columns for its task (or the inferred task)."""

    name = "parse"

    def _one(self, row: dict) -> dict:
        if row["status"] != "ok":
            return row
        try:
            p = parse_output(row["text"], row.get("task"))
        except ParseError as e:
            return fail(row, self.name, e.code, str(e))
        return row | {
            "parsed_task": p.task, "question": p.question, "answer": p.answer, "options": p.options,
            "answer_letter": p.answer_letter, "turns": p.turns, "question_boxes": p.question_boxes,
            "answer_boxes": p.answer_boxes, "points": p.points,
        }

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Parse a batch; unparseable outputs become error rows that keep their raw text."""
        return [self._one(r) for r in batch]
