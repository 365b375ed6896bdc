"""The generate stage: each sample's instruction and image through the generator's engine."""

from __future__ import annotations

from genixer_ray.config import RunConfig
from genixer_ray.engines.base import GenerationRequest, get_generator
from genixer_ray.schema import GENERATION_SCHEMA
from genixer_ray.stages import fail, row_image


class GenerateStage:
    """Run the generator on every ``ok`` sample row (after :class:`~genixer_ray.stages.prompt.PromptStage`);
    the engine is built once per process.

    A batch's requests are handed to the engine together, an image's samples back to back, so
    its tokens are reused from the engine's prefix and encoder caches.
    """

    name = "generate"
    columns = GENERATION_SCHEMA  # what its rows hold from here on (and their image, while a step follows)

    def __init__(self, cfg: RunConfig):
        self.sampling = cfg.sampling
        self.generator = get_generator(cfg.engines.generator)
        self.provenance = {"generator": self.generator.model_path, "generator_hash": self.generator.model_hash, "backend": self.generator.backend}

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Generate for every ``ok`` row; error rows pass through; rows keep their image."""
        out = [row | self.provenance for row in batch]
        todo = [
            (i, GenerationRequest(row_image(r), r["instruction"], self.sampling.model_copy(update={"seed": r["seed"]})))
            for i, r in enumerate(out) if r["status"] == "ok"
        ]
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
