"""Rating each parsed sample on several axes, one decode step per axis, the image and sample shared.

Each axis (``filters.rating.axes``) is a question asked after the image, the sample and the
scale, which every axis shares::

    <image> Question: ... Answer: ...
    Rate the pair on the question below from 1 (not at all) to 5 (fully). Answer with one digit.
    Does answering the question need the image, rather than common knowledge alone?

and read from the judge's raw next-token distribution at the first decoded position, over every
vocabulary token that decodes to ``1`` .. ``5``: the axis's score is the expected rating with the
five renormalized (1.0 to 5.0), its confidence the probability mass the five held. Nothing is
sampled, so the same rows give the same scores.

**The shared prefix.** Every axis of a row starts with the same tokens (the chat template, the
image, the sample, the scale); only the axis's question differs, at the end, so a later axis
computes only its question's tokens and the part of the prefix that fills no whole KV block. vLLM's automatic prefix cache
keeps the blocks a request computed, but requests scheduled in one step do not see one another's:
so the stage asks the first axis of every row of a batch, then, once that prefill is cached, the
other axes (their prompts then compute only the question's tokens; the rows' ``cached_tokens``
in the engine statistics show it). The transformers backend computes every prompt whole: its
``generate`` takes no prefix computed for another prompt with an image, so it rates at the cost
of one judge call per axis (use vLLM to rate at scale).

The ``grounding`` axis is asked only of rows with boxes or points (it rates the region they mark).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence

from genixer_ray.config import RatingConfig, SamplingConfig
from genixer_ray.engines.base import GenerationRequest, Generator
from genixer_ray.filters.base import ScoringStage
from genixer_ray.filters.judge import judged_text
from genixer_ray.stages import row_image

AXIS_QUESTIONS = {
    "relevance": "Is the question about what this image shows?",
    "correctness": "Is the answer correct for this image?",
    "visual_dependency": "Does answering the question need the image, rather than common knowledge alone?",
    "formatting": "Is the pair well formed: a clear question, and an answer in the form the question asks for?",
    "grounding": "Does each box or point in the pair mark the region the text says it marks?",
}
# Asked before the axis's question so that it is part of the prefix the axes share (after it, every
# axis would compute the scale's tokens again).
SCALE = "Rate the pair on the question below from 1 (not at all) to 5 (fully). Answer with one digit."
DIGITS = "12345"


def digit_token_ids(tokenizer) -> list[list[int]]:
    """For each rating 1..5, every vocabulary id that decodes to that digit (surrounding spaces ignored).

    Raises:
        ValueError: a digit has no single token, so its probability at one position is not defined.
    """
    special = set(tokenizer.all_special_ids)
    ids: list[list[int]] = [[] for _ in DIGITS]
    for i in range(len(tokenizer)):
        if i not in special and (word := tokenizer.decode([i]).strip()) in DIGITS and word:
            ids[DIGITS.index(word)].append(i)
    if missing := [d for d, found in zip(DIGITS, ids, strict=True) if not found]:
        raise ValueError(f"the rating judge's vocabulary has no single-token digit {', '.join(missing)}; a rating needs one each")
    return ids


def expected_rating(logprobs: dict[int, float], digits: Sequence[Sequence[int]]) -> tuple[float, float]:
    """``(score, confidence)``: the expected rating over the five digits' probabilities (renormalized),
    and the probability mass they hold, from raw log-probabilities of each digit's token ids."""
    probs = [sum(math.exp(logprobs[t]) for t in ids) for ids in digits]
    mass = sum(probs)
    if mass <= 0.0:
        return math.nan, 0.0
    return sum((k + 1) * p for k, p in enumerate(probs)) / mass, mass


def axis_question(cfg: RatingConfig, axis: str) -> str:
    """The question asked for ``axis``: the config's own, else the built-in one."""
    return cfg.prompts.get(axis, AXIS_QUESTIONS[axis])


def rating_instruction(cfg: RatingConfig, sample: str, axis: str) -> str:
    """The judge's instruction for one axis of ``sample`` (the judged text): the part every axis
    shares first, the axis's question last."""
    return f"{sample}\n{SCALE}\n{axis_question(cfg, axis)}"


def prompt_version(cfg: RatingConfig) -> str:
    """A digest of every axis's prompt as asked: rows rated with other prompts differ in it."""
    text = "\n".join(f"{a}={rating_instruction(cfg, '{sample}', a)}" for a in cfg.axes)
    return "r2-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def has_region(row: dict) -> bool:
    """Whether a row's text marks a region (boxes or points): the grounding axis applies."""
    return any(row.get(k) for k in ("question_boxes", "answer_boxes", "points"))


class RatingStage(ScoringStage):
    """Adds ``rating_{axis}`` and ``rating_{axis}_confidence`` for every axis to every ``ok`` row."""

    name = "rating"

    def __init__(self, cfg: RatingConfig, generator: Generator):
        self.cfg = cfg
        self.generator = generator
        self.digits = digit_token_ids(generator.processor.tokenizer)
        self.digit_ids = [t for d in self.digits for t in d]  # asked of the engine: every digit's tokens
        self.version = prompt_version(cfg)
        # Prompt tokens asked and those vLLM's prefix cache served (cached stays 0 on transformers):
        # the share the shared prefix saved, for the bench and the tests.
        self.tokens: Counter = Counter()

    def score(self, rows: list[dict]) -> list[dict]:
        """Rate ``ok`` rows on every axis: the first axis of each row, then the others (see the module doc)."""
        greedy = SamplingConfig(temperature=0.0, max_tokens=1)
        asked = [[a for a in self.cfg.axes if a != "grounding" or has_region(r)] for r in rows]
        texts = [judged_text(r) for r in rows]
        images = [row_image(r) for r in rows]
        waves: list[list[tuple[int, str]]] = [[(i, axes[0]) for i, axes in enumerate(asked) if axes],
                                              [(i, a) for i, axes in enumerate(asked) for a in axes[1:]]]
        out = [{"rating_model": self.generator.model_path, "rating_hash": self.generator.model_hash, "rating_prompt_version": self.version,
                "rating_reason": None} for _ in rows]
        for wave in waves:
            requests = [GenerationRequest(images[i], rating_instruction(self.cfg, texts[i], a), greedy) for i, a in wave]
            for (i, axis), res in zip(wave, self.generator.next_token_logprobs(requests, self.digit_ids), strict=True):
                self.tokens.update(prompt=res.prompt_tokens or 0, cached=res.cached_tokens or 0)
                if res.error_code:
                    out[i] |= {f"rating_{axis}": None, f"rating_{axis}_confidence": None, "rating_reason": "rating_failed"}
                    continue
                score, confidence = expected_rating(res.top_logprobs[0], self.digits)
                out[i] |= {f"rating_{axis}": score, f"rating_{axis}_confidence": confidence}
        return out
