"""The prompt stage: each image's samples, each with its instruction (task-agnostic or task-specific) and seed."""

from __future__ import annotations

from datetime import UTC, datetime

from genixer_ray.config import RunConfig
from genixer_ray.prompts import choose_prompts
from genixer_ray.seeding import derive_seed, sample_id


class PromptStage:
    """Turn each image row into ``samples_per_image`` rows (``sample`` 0, 1, ...), each with the
    instruction chosen for it and the seed it is generated with.

    The choice depends only on the run's seed, the image id and the sample, so a resumed or
    repeated run asks the same; in task-specific mode an image's samples take different tasks of
    ``task_mix`` while any are left. The rows of an image share its decoded pixels (no copy), and
    error rows pass through once per sample.
    """

    name = "prompt"

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.profile = cfg.prompts.build()
        self.fan_out = cfg.samples_per_image  # rows out per row in (the stage contract)

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Every image row as its samples, in order, with their prompts and sampling provenance."""
        s, cfg = self.cfg.sampling, self.cfg
        now = datetime.now(UTC)
        out = []
        for row in batch:
            choices = choose_prompts(row["image_id"], self.fan_out, seed=s.seed, mode=cfg.mode, task_mix=cfg.task_mix, profile=self.profile)
            out += [
                row | {
                    "sample": k, "run_id": cfg.name, "mode": cfg.mode, "task": choice.task, "prompt_profile": self.profile.name,
                    "template_id": choice.template_id, "instruction": choice.instruction,
                    "seed": derive_seed(s.seed, sample_id(row["image_id"], k)), "temperature": s.temperature, "top_p": s.top_p,
                    "max_tokens": s.max_tokens, "created_at": now,
                }
                for k, choice in enumerate(choices)
            ]
        return out
