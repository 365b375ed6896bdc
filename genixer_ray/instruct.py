"""The instruction set (Genixer, step 2): canonical samples -> generator training rows.

:mod:`genixer_ray.annotations` reads the public releases into canonical samples;
:func:`build_instruction_set` applies the prompt profile's two-level templates and the task mix.
The target is the ``Question: ... Answer: ...`` text the generator learns to write.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from genixer_ray.prompts import PromptProfile, referring_question
from genixer_ray.seeding import derive_seed
from genixer_ray.tasks import qa_text


def build_instruction_set(
    samples: Iterator[dict], *, seed: int, specific_share: float, task_weights: dict[str, float], profile: PromptProfile,
) -> Iterator[dict]:
    """Apply the two-level templates and the task mix to canonical samples.

    A task's weight ``w`` keeps each of its samples ``floor(w)`` times plus once more with
    probability ``w - floor(w)`` (so 0.5 halves a task, 2 doubles it, each copy with its own
    template). Each copy is task-specific with probability ``specific_share`` when the profile
    names its task (a task the profile does not name is trained task-agnostic only). REC and REG
    questions are drawn from the profile's phrasing pools. Every choice is drawn from
    ``(seed, sample id, copy)``, so the set is reproducible.

    Yields rows ``{"sample_id", "image", "task", "mode", "prompt_profile", "template_id",
    "instruction", "target"}``; ``template_id`` is ``g<generic index>`` (or ``fixed``), followed by
    ``+rec<k>``/``+reg<k>`` for the REC/REG phrasing.
    """
    for s in samples:
        w = task_weights.get(s["task"], 1.0)
        rng = random.Random(derive_seed(seed, f"mix:{s['sample_id']}"))
        copies = int(w) + (1 if rng.random() < w - int(w) else 0)
        for c in range(copies):
            r = random.Random(derive_seed(seed, f"template:{s['sample_id']}:{c}"))
            idx = r.randrange(len(profile.generic))
            specific = r.random() < specific_share and s["task"] in profile.tasks
            generic = profile.generic[idx]
            template = "fixed" if specific and s["task"] in profile.fixed else f"g{idx:02d}"
            turns = s["turns"]
            if s.get("referring"):
                q, a, phrasing = referring_question(profile, s["task"], s["referring"], r)
                turns, template = [(q, a)], f"{template}+{phrasing}"
            yield {
                "sample_id": f"{s['sample_id']}#{c}",
                "image": s["image"],
                "task": s["task"],
                "mode": "specific" if specific else "agnostic",
                "prompt_profile": profile.name,
                "template_id": template,
                "instruction": profile.specific(generic, s["task"]) if specific else generic,
                "target": qa_text(turns),
            }
