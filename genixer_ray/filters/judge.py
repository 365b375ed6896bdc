"""Judge filter: a vision-language model's probability that a question-answer pair is true.

The judge is asked ``Question: ... Answer: ... Is the answer to the question true for the
image? Answer Yes or No.`` and P(Yes) is read from the log-probabilities of the first answer
position, over every Yes and No token variant (``Yes``, `` yes``, ``YES``, ...), renormalized over
the two: ``P(Yes) = sum p(yes variants) / (sum p(yes variants) + sum p(no variants))``. It is one
decode step with nothing sampled, so the same row always gets the same score (the paper's
scripts read it from sampled tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from genixer_ray.config import JudgeConfig, SamplingConfig
from genixer_ray.engines.base import GenerationRequest, Generator
from genixer_ray.stages import row_image
from genixer_ray.tasks import qa_text


def yes_no_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """Every vocabulary id that decodes to "yes" or "no" (any case, surrounding spaces ignored).

    Raises:
        ValueError: the vocabulary has no single token for one of them, so P(Yes) at one
            position is not defined for this model.
    """
    special = set(tokenizer.all_special_ids)
    yes, no = [], []
    for i in range(len(tokenizer)):
        if i in special:
            continue
        word = tokenizer.decode([i]).strip().lower()
        if word == "yes":
            yes.append(i)
        elif word == "no":
            no.append(i)
    if not yes or not no:
        raise ValueError(f"the judge's vocabulary has no single-token {'Yes' if not yes else 'No'}; P(Yes) needs one")
    return yes, no


def p_yes(logprobs: dict[int, float], yes: Sequence[int], no: Sequence[int]) -> float:
    """P(Yes) renormalized over the Yes and No variants, from their log-probabilities."""

    def logsumexp(xs: list[float]) -> float:
        m = max(xs)
        return m + math.log(sum(math.exp(x - m) for x in xs)) if m > -math.inf else -math.inf

    ly, ln = logsumexp([logprobs[t] for t in yes]), logsumexp([logprobs[t] for t in no])
    if ly == ln == -math.inf:
        return math.nan
    return 1.0 / (1.0 + math.exp(ln - ly)) if ln - ly < 700 else 0.0


def judged_text(row: dict) -> str:
    """The question-answer text the judge sees: every turn of a dialogue, else the one pair."""
    turns = row.get("turns") or [{"question": row["question"], "answer": row["answer"]}]
    return qa_text([(t["question"], t["answer"]) for t in turns])


class JudgeStage:
    """Adds ``judge_p_yes`` (and ``judge_model``) to every ``ok`` row, batched on one engine.

    A row the engine cannot serve (prompt too long) gets ``judge_reason = "judge_failed"``.
    Selection (threshold, band, top fraction) is applied later, per shard, from the scores.
    """

    name = "judge"

    def __init__(self, cfg: JudgeConfig, generator: Generator):
        self.cfg = cfg
        self.generator = generator
        self.yes, self.no = yes_no_token_ids(generator.processor.tokenizer)

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Score a batch; rows that are not ``ok`` pass through unchanged."""
        todo = [i for i, r in enumerate(batch) if r["status"] == "ok"]
        greedy = SamplingConfig(temperature=0.0, max_tokens=1)
        requests = [
            GenerationRequest(row_image(batch[i]), self.cfg.prompt.format(qa=judged_text(batch[i])), greedy) for i in todo
        ]
        results = self.generator.next_token_logprobs(requests, self.yes + self.no)
        out = list(batch)
        for i, res in zip(todo, results):
            row = {**batch[i], "judge_model": self.generator.model_path}
            if res.error_code:
                row |= {"judge_p_yes": None, "judge_reason": "judge_failed"}
            else:
                row |= {"judge_p_yes": p_yes(res.top_logprobs[0], self.yes, self.no), "judge_reason": None}
            out[i] = row
        return out
