"""Judge filter: a vision-language model's probability that a question-answer pair is true.

The judge is asked ``Question: ... Answer: ... Is the answer to the question true for the
image? Answer Yes or No.`` and P(Yes) is read from the log-probabilities of the first answer
position, over every Yes and No token variant (``Yes``, `` yes``, ``YES``, ...), renormalized over
the two: ``P(Yes) = sum p(yes variants) / (sum p(yes variants) + sum p(no variants))``. It is one
decode step with nothing sampled, so the same row always gets the same score.

With ``paper_score`` (or ``score: paper``) the stage also computes the paper's quantity, which its
0.5-0.7 finding refers to: a reply sampled (seeded per row) to Genixer's prompt with Genixer's
settings, scored by :func:`paper_score` from the reply's own sampling probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from genixer_ray.config import JudgeConfig, SamplingConfig
from genixer_ray.engines.base import GenerationRequest, Generator
from genixer_ray.filters.base import ScoringStage
from genixer_ray.seeding import derive_seed
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


# Genixer's filtering script (Genixer_LLaVA/fuyudatafiltering/GenQA_filtering_mp.py): its prompt
# and its sampling settings (do_sample, top_p 0.95, top_k 10, temperature 1, 10 new tokens).
PAPER_PROMPT = "Here is a question and answer pair. Is '{qa}' true for this image?\nPlease answer this question with Yes or No.\n"
PAPER_SAMPLING = {"temperature": 1.0, "top_p": 0.95, "top_k": 10, "max_tokens": 10, "logprobs": 10}


def sampled_probability(token_id: int, top: dict[int, float], *, top_k: int, top_p: float) -> float:
    """The probability a token was sampled with under top-k then top-p (temperature 1).

    ``top`` holds the raw log-probabilities of the ``top_k`` likeliest tokens at that step. As
    transformers' warpers (and vLLM) do: the top-k are renormalized, top-p keeps the smallest
    prefix of them whose mass reaches ``top_p``, and that prefix is renormalized again.
    """
    best = sorted(top.items(), key=lambda kv: -kv[1])[:top_k]
    m = best[0][1]
    weights = [(t, math.exp(lp - m)) for t, lp in best]
    total = sum(w for _, w in weights)
    kept, mass = {}, 0.0
    for t, w in weights:
        if mass >= top_p * total:
            break
        kept[t] = w
        mass += w
    return kept.get(token_id, 0.0) / mass


def paper_score(token_ids: Sequence[int], tops: Sequence[dict[int, float]], *, top_k: int = 10, top_p: float = 0.95) -> float:
    """Genixer's judge score of a sampled reply: the product of its tokens' sampling probabilities
    raised to ``1 / (n - 1)`` for ``n`` reply tokens, as the script computes it (it drops the last
    token from the count, not from the product). A one-token reply gives its probability."""
    probs = [sampled_probability(t, top, top_k=top_k, top_p=top_p) for t, top in zip(token_ids, tops, strict=True)]
    joint = math.prod(probs)
    return joint ** (1.0 / (len(probs) - 1)) if len(probs) > 1 else joint


def says_yes(reply: str) -> bool:
    """Whether a reply's first word is Yes."""
    words = reply.strip().split()
    return bool(words) and words[0].strip(".,!:;'\"").lower() == "yes"


class JudgeStage(ScoringStage):
    """Adds ``judge_p_yes`` (and ``judge_model``, ``judge_hash``) to every ``ok`` row, batched on one engine.

    A row the engine cannot serve (prompt too long) gets ``judge_reason = "judge_failed"``.
    Selection (threshold, band, top fraction) is applied later, per shard, from the scores.
    """

    name = "judge"

    def __init__(self, cfg: JudgeConfig, generator: Generator):
        self.cfg = cfg
        self.generator = generator
        self.yes, self.no = yes_no_token_ids(generator.processor.tokenizer)

    def score(self, rows: list[dict]) -> list[dict]:
        """Score ``ok`` rows: one greedy step each for P(Yes) (and the paper's sampled reply if asked)."""
        greedy = SamplingConfig(temperature=0.0, max_tokens=1)
        requests = [GenerationRequest(row_image(r), self.cfg.prompt.format(qa=judged_text(r)), greedy) for r in rows]
        results = self.generator.next_token_logprobs(requests, self.yes + self.no)
        papers = self._paper(rows) if self.cfg.wants_paper_score else [None] * len(rows)
        out = []
        for res, paper in zip(results, papers, strict=True):
            row = {"judge_model": self.generator.model_path, "judge_hash": self.generator.model_hash}
            if res.error_code:
                row |= {"judge_p_yes": None, "judge_reason": "judge_failed"}
            else:
                row |= {"judge_p_yes": p_yes(res.top_logprobs[0], self.yes, self.no), "judge_reason": None}
            if paper is not None:
                if paper.error_code or not paper.token_ids:
                    row |= {"judge_paper_score": None, "judge_paper_reply": None, "judge_reason": "judge_failed"}
                else:
                    row |= {"judge_paper_score": paper_score(paper.token_ids, paper.top_logprobs), "judge_paper_reply": paper.text}
            out.append(row)
        return out

    @staticmethod
    def _paper_sampling(row: dict) -> SamplingConfig:
        """The paper's sampling settings with the row's own seed."""
        return SamplingConfig(**PAPER_SAMPLING, seed=derive_seed(row.get("seed") or 0, "judge-paper"))

    def _paper(self, rows: list[dict]):
        """One reply per row to the paper's prompt, sampled as its script did, seeded per row."""
        requests = [GenerationRequest(row_image(r), PAPER_PROMPT.format(qa=judged_text(r)), self._paper_sampling(r)) for r in rows]
        return self.generator.generate(requests)
