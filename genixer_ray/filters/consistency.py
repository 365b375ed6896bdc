"""Agreement between a generated answer and an answer given again to the same question.

The self-consistency filter asks the generated question again (k samples) and scores how well
each new answer agrees with the generated one: the option letter for multi-choice, the best IoU
between boxes for box answers, token F1 of normalized text otherwise. Scores lie in [0, 1].
"""

from __future__ import annotations

from collections import Counter

from genixer_ray.config import ConsistencyConfig, SamplingConfig
from genixer_ray.engines.base import GenerationRequest, Generator
from genixer_ray.filters.base import ScoringStage
from genixer_ray.seeding import derive_seed
from genixer_ray.stages import row_image
from genixer_ray.tasks import ParseError, normalize_answer, option_letter, parse_regions


def token_f1(a: str, b: str) -> float:
    """F1 of the normalized tokens of two answers (1.0 for two empty answers)."""
    ta, tb = normalize_answer(a).split(), normalize_answer(b).split()
    if not ta or not tb:
        return float(ta == tb)
    common = sum((Counter(ta) & Counter(tb)).values())
    if common == 0:
        return 0.0
    p, r = common / len(tb), common / len(ta)
    return 2 * p * r / (p + r)


def box_iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def answer_part(text: str) -> str:
    """The answer in a re-answer: the text after its last ``Answer:`` if it has one.

    A Genixer generator asked a question tends to write a whole ``Question: ... Answer: ...``
    pair, and other models often prefix ``Answer:``; the question part must not be compared (its
    boxes would count as the answer's).
    """
    head, sep, tail = text.rpartition("Answer:")
    return tail.strip() if sep else text


def agreement(generated: str, again: str, *, task: str | None) -> float:
    """How far ``again`` (a re-answer) agrees with the ``generated`` answer, in [0, 1].

    ``again`` is reduced to :func:`answer_part` first. Multi-choice: 1 when both name the same
    option letter. Answers holding boxes: the mean, over
    the generated boxes, of the best IoU with a box of the re-answer (0 when it gives none or a
    malformed one). Otherwise: token F1 of the normalized texts.
    """
    again = answer_part(again)
    if task == "multi_choice_vqa":
        letter = option_letter(generated)
        return float(letter is not None and letter == option_letter(again))
    try:
        g_boxes, _ = parse_regions(generated)
    except ParseError:
        g_boxes = []
    if g_boxes:
        try:
            a_boxes, _ = parse_regions(again)
        except ParseError:
            return 0.0
        if not a_boxes:
            return 0.0
        return sum(max(box_iou(g, a) for a in a_boxes) for g in g_boxes) / len(g_boxes)
    return token_f1(generated, again)


# Dialogues have no single answer to compare against; they are left to the other filters.
_NOT_REASKED = ("multi_turn_dialogue", "referential_dialogue")


def reask_instruction(row: dict) -> str:
    """The generated question, with a hint at the answer's expected form."""
    q = row["question"]
    if row.get("options"):
        return f"{q} Answer with the letter of the correct option."
    if row.get("answer_boxes"):
        return f"{q} Please provide the coordinates in the answer."
    return f"{q} Answer briefly."


class ConsistencyStage(ScoringStage):
    """Asks each ``ok`` row's question again ``samples`` times and scores agreement with its answer.

    Adds ``consistency_score`` (the mean agreement over the re-answers, see :func:`agreement`) and
    ``consistency_answers``. A multi-choice answer whose letter is not among the listed options
    gets ``consistency_reason = "answer_not_in_options"`` without asking. Dialogue rows are not
    scored (``None``), and do not count against the row.
    """

    name = "consistency"

    def __init__(self, cfg: ConsistencyConfig, generator: Generator):
        self.cfg = cfg
        self.generator = generator

    def _precheck(self, row: dict) -> str | None:
        if row.get("options"):
            listed = {option_letter(o) for o in row["options"]}
            if option_letter(row["answer"]) not in listed:
                return "answer_not_in_options"
        return None

    def applies(self, row: dict) -> bool:
        """``ok`` rows of every task but the dialogues."""
        return row["status"] == "ok" and (row.get("parsed_task") or row.get("task")) not in _NOT_REASKED

    def score(self, rows: list[dict]) -> list[dict]:
        """Score rows; all their re-answers go to the engine in one call."""
        out: list[dict] = [{} for _ in rows]
        asks: list[tuple[int, GenerationRequest]] = []
        for i, row in enumerate(rows):
            if reason := self._precheck(row):
                out[i] = {"consistency_score": 0.0, "consistency_answers": [], "consistency_reason": reason}
                continue
            image, text = row_image(row), reask_instruction(row)
            for j in range(self.cfg.samples):
                seed = derive_seed(row.get("seed") or 0, f"consistency:{j}")
                sampling = SamplingConfig(temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens, seed=seed)
                asks.append((i, GenerationRequest(image, text, sampling)))
        results = self.generator.generate([r for _, r in asks])
        answers: dict[int, list[str]] = {}
        failed: set[int] = set()
        for (i, _), res in zip(asks, results):
            answers.setdefault(i, []).append(res.text)
            if res.error_code:
                failed.add(i)
        for i, texts in answers.items():
            row = rows[i]
            if i in failed:
                out[i] = {"consistency_score": None, "consistency_answers": texts, "consistency_reason": "consistency_failed"}
                continue
            task = row.get("parsed_task") or row.get("task")
            score = sum(agreement(row["answer"], t, task=task) for t in texts) / len(texts)
            out[i] = {"consistency_score": score, "consistency_answers": texts, "consistency_reason": None}
        return out
