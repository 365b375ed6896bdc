"""Agreement between a generated answer and an answer given again to the same question.

The self-consistency filter asks the generated question again (k samples) and scores how well
each new answer agrees with the generated one: the option letter for multi-choice, the best IoU
between boxes for box answers, token F1 of normalized text otherwise. Scores lie in [0, 1].
"""

from __future__ import annotations

import re
import string
from collections import Counter

from genixer_ray.tasks import ParseError, option_letter, parse_regions

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the usual VQA/SQuAD normalization)."""
    text = text.lower()
    text = "".join(c for c in text if c not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


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


def agreement(generated: str, again: str, *, task: str | None) -> float:
    """How far ``again`` (a re-answer) agrees with the ``generated`` answer, in [0, 1].

    Multi-choice: 1 when both name the same option letter. Answers holding boxes: the mean, over
    the generated boxes, of the best IoU with a box of the re-answer (0 when it gives none or a
    malformed one). Otherwise: token F1 of the normalized texts.
    """
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
