"""Pipeline stages: plain callables over a batch of rows, runnable and testable without Ray.

A batch is a list of row dicts. Each stage returns exactly one row per input row, keeping the
row's ``image_id``; a row that fails gets ``status = "error"`` with a code and the stage name and
passes through later stages untouched.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

from genixer_ray.config import InputConfig, RunConfig
from genixer_ray.engines.base import GenerationRequest, get_generator
from genixer_ray.images import DecodeError, decode_image


def derive_seed(base_seed: int, key: str) -> int:
    """A per-row seed from the run's seed and a stable key (the image id): same inputs, same seed."""
    digest = hashlib.blake2b(f"{base_seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF


def _fail(row: dict, stage: str, code: str, message: str) -> dict:
    return {**row, "status": "error", "error_stage": stage, "error_code": code, "error_message": message}


class DecodeStage:
    """Read each row's ``source`` (a local path) and decode it into an RGB array in ``image``."""

    name = "decode"

    def __init__(self, cfg: InputConfig):
        self.max_pixels = cfg.max_pixels
        self.max_side = cfg.max_side

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Decode a batch; missing, unreadable and undecodable inputs become error rows."""
        out = []
        for row in batch:
            try:
                with open(row["source"], "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                out.append(_fail(row, self.name, "missing", f"no such file: {row['source']}"))
                continue
            except OSError as e:
                out.append(_fail(row, self.name, "read_failed", str(e)))
                continue
            try:
                image = decode_image(data, max_pixels=self.max_pixels, max_side=self.max_side)
            except DecodeError as e:
                out.append(_fail(row, self.name, e.code, e.message))
                continue
            out.append({**row, "status": "ok", "image": image})
        return out


class GenerateStage:
    """Run the generator over the decoded rows of a batch; the engine is built once per process."""

    name = "generate"

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.generator = get_generator(cfg.generator)

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Generate for every ``ok`` row; error rows pass through; ``image`` is dropped from all."""
        s = self.cfg.sampling
        todo = [i for i, r in enumerate(batch) if r["status"] == "ok"]
        requests = [
            GenerationRequest(
                image=batch[i]["image"],
                instruction=self.cfg.instruction,
                sampling=s.model_copy(update={"seed": derive_seed(s.seed, batch[i]["image_id"])}),
            )
            for i in todo
        ]
        results = dict(zip(todo, zip(requests, self.generator.generate(requests))))
        now = datetime.now(timezone.utc)
        out = []
        for i, row in enumerate(batch):
            row = {k: v for k, v in row.items() if k != "image"}
            row.update(
                run_id=self.cfg.name,
                generator=self.generator.model_path,
                backend=self.generator.backend,
                instruction=self.cfg.instruction,
                temperature=s.temperature,
                top_p=s.top_p,
                max_tokens=s.max_tokens,
                created_at=now,
            )
            if i in results:
                req, res = results[i]
                row.update(
                    seed=req.sampling.seed,
                    text=res.text,
                    token_ids=res.token_ids,
                    logprobs=res.logprobs,
                    finish_reason=res.finish_reason,
                    prompt_tokens=res.prompt_tokens,
                )
                if res.error_code:
                    row = _fail(row, self.name, res.error_code, res.error or "")
            out.append(row)
        return out
