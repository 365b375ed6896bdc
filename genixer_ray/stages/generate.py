"""The generate stage: choose each sample's instruction (task-agnostic or task-specific) and generate."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from genixer_ray.config import RunConfig
from genixer_ray.engines.base import GenerationRequest, get_generator
from genixer_ray.prompts import choose_prompts
from genixer_ray.schema import GENERATION_SCHEMA
from genixer_ray.seeding import derive_seed, sample_id
from genixer_ray.stages import fail, row_image


class GenerateStage:
    """Choose each sample's instruction and run the generator; the engine is built once per process.

    Each image row becomes ``samples_per_image`` rows (``sample`` 0, 1, ...) sharing its decoded
    image; an image's requests are handed to the engine back to back, so its tokens are reused
    from the engine's caches.
    """

    name = "generate"
    columns = GENERATION_SCHEMA  # what its rows hold from here on (and their image, while a step follows)

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.generator = get_generator(cfg.engines.generator)
        self.generator_hash = self.generator.model_hash
        self.profile = cfg.prompts.build()
        self.fan_out = cfg.samples_per_image  # rows out per row in (the stage contract)

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Generate for every sample of every ``ok`` row; error rows pass through, once per sample; rows keep their image."""
        s, cfg = self.cfg.sampling, self.cfg
        now = datetime.now(UTC)
        out: list[dict[str, Any]] = []
        todo: list[tuple[int, GenerationRequest]] = []
        for row in batch:
            image = row_image(row) if row["status"] == "ok" else None
            choices = choose_prompts(
                row["image_id"], self.fan_out, seed=s.seed, mode=cfg.mode, task_mix=cfg.task_mix, profile=self.profile
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
