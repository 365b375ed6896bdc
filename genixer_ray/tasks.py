"""The nine Genixer tasks (ids, groups, this project's task sentences) and the output parsers.

How instructions are built from generic phrasings and task sentences is in
:mod:`genixer_ray.prompts`.

The generator writes ``Question: <q> Answer: <a>``; the dialogue tasks write several such pairs.
Boxes are ``[x1,y1,x2,y2]`` normalized to [0, 1] (three decimals), several in one bracket joined
by ``;``; a point is ``[x,y]``. The parsers turn that text into typed fields or a :class:`ParseError`
with a stable code; the raw text is always kept by the caller.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

from genixer_ray.errors import RowError


@dataclass(frozen=True)
class Task:
    """One Genixer task: its id, group, display name and the sentence that names it."""

    id: str
    group: str  # "generic" or "grounding"
    name: str
    sentence: str


TASKS: dict[str, Task] = {
    t.id: t
    for t in (
        Task("common_vqa", "generic", "Common VQA", "This is a Common VQA task: ask about what the image shows and answer briefly."),
        Task("adversarial_vqa", "generic", "Adversarial VQA",
             "This is an Adversarial VQA task: ask about something absent or misleading in the image and answer truthfully."),
        Task("multi_choice_vqa", "generic", "Multi-choice VQA",
             "This is a Multi-choice VQA task: list the options as (A), (B), (C), (D) in the question and give the correct option in the answer."),
        Task("multi_turn_dialogue", "generic", "Multi-turn dialogue (MD)",
             "This is a Multi-turn Dialogue task: write several rounds of questions and answers about the image."),
        Task("rec", "grounding", "REC",
             "This is a Referring Expression Comprehension (REC) task: the question names one object. Please provide the coordinates in the answer."),
        Task("reg", "grounding", "REG",
             "This is a Referring Expression Generation (REG) task: the question gives the coordinates of a region and the answer describes it."),
        Task("pointqa", "grounding", "PointQA",
             "This is a PointQA task: the question asks about the object at a given point or box, and the answer is in words."),
        Task("referential_dialogue", "grounding", "Referential dialogue (RD)",
             "This is a Referential Dialogue task: write several rounds of questions and answers that mention objects with their coordinates."),
        Task("q_ca", "grounding", "Q->CA",
             "This is a Q->CA task: answer the question with a chain of reasoning that cites the coordinates of the objects it uses."),
    )
}


class ParseError(RowError):
    """Model output that does not fit its task's format; ``code`` is stable and machine-readable."""


@dataclass
class Parsed:
    """Typed fields parsed from one generated text."""

    task: str
    question: str
    answer: str
    turns: list[dict[str, str]] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    answer_letter: str | None = None
    question_boxes: list[list[float]] = field(default_factory=list)
    answer_boxes: list[list[float]] = field(default_factory=list)
    points: list[list[float]] = field(default_factory=list)


_PAIR = re.compile(r"Question:\s*(?P<q>.*?)\s*Answer:\s*(?P<a>.*?)\s*(?=Question:|$)", re.S)
BRACKET = re.compile(r"\[([^\[\]]*)\]")  # a "[...]" group of boxes or points
_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BOX = re.compile(rf"^{_NUM},{_NUM},{_NUM},{_NUM}$")
_POINT = re.compile(rf"^{_NUM},{_NUM}$")
_OPTION = re.compile(r"\(([A-H])\)\s*(.*?)\s*(?=\([A-H]\)|$)", re.S)
_LETTER = re.compile(r"^\s*\(?([A-H])\)?(?:[\s.:)]|$)")


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the usual VQA/SQuAD normalization)."""
    text = text.lower()
    text = "".join(c for c in text if c not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _names_option(answer: str, option: str) -> bool:
    """Whether the words after an answer's letter fit that option's text (none at all do too)."""
    rest = normalize_answer(_LETTER.sub("", answer, count=1))
    text = normalize_answer(option)
    return not rest or text in rest or rest in text


def option_letter(answer: str) -> str | None:
    """The option letter a multi-choice answer starts with (``(B) ...``, ``B.``, ``B``), if any."""
    m = _LETTER.match(answer)
    return m.group(1) if m else None


def format_boxes(boxes: list[list[float]]) -> str:
    """Write normalized boxes (or points) the way the generator is trained to: ``[x1,y1,x2,y2;...]``."""
    return "[" + ";".join(",".join(f"{min(max(v, 0.0), 1.0):.3f}" for v in b) for b in boxes) + "]"


def qa_text(turns: list[tuple[str, str]]) -> str:
    """The generator's target text: ``Question: <q> Answer: <a>`` for each turn, in order."""
    return " ".join(f"Question: {q.strip()} Answer: {a.strip()}" for q, a in turns)


def parse_regions(text: str) -> tuple[list[list[float]], list[list[float]]]:
    """Boxes and points written in ``text`` (normalized coordinates).

    Raises:
        ParseError: ``bad_box`` for a box outside [0, 1] or with x1 >= x2 or y1 >= y2,
            ``bad_point`` for a point outside [0, 1].
    """
    boxes, points = [], []
    for group in BRACKET.findall(text):
        for item in group.split(";"):
            if m := _BOX.match(item):
                b = [float(v) for v in m.groups()]
                if not (0.0 <= b[0] < b[2] <= 1.0 and 0.0 <= b[1] < b[3] <= 1.0):
                    raise ParseError("bad_box", f"box {b} is not 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")
                boxes.append(b)
            elif m := _POINT.match(item):
                p = [float(v) for v in m.groups()]
                if not all(0.0 <= v <= 1.0 for v in p):
                    raise ParseError("bad_point", f"point {p} is outside [0, 1]")
                points.append(p)
    return boxes, points


def _pairs(text: str) -> list[dict[str, str]]:
    turns = [{"question": m["q"], "answer": m["a"]} for m in _PAIR.finditer(text.strip())]
    if not turns:
        raise ParseError("no_question_answer", "expected 'Question: ... Answer: ...'")
    for t in turns:
        if not t["question"] or not t["answer"]:
            raise ParseError("empty_field", "a question or an answer is empty")
    return turns


def _infer_task(p: Parsed) -> str:
    """Which task a task-agnostic output looks like (first match in a fixed order)."""
    grounded = bool(p.question_boxes or p.answer_boxes or p.points)
    if len(p.turns) > 1:
        return "referential_dialogue" if grounded else "multi_turn_dialogue"
    if p.options:
        return "multi_choice_vqa"
    if p.answer_boxes and not p.question_boxes:
        return "q_ca" if len(p.answer.split()) > 12 else "rec"
    if p.question_boxes or p.points:
        return "pointqa" if p.points or "?" in p.question and not p.answer_boxes and len(p.answer.split()) <= 4 else "reg"
    return "common_vqa"


def parse_output(text: str, task: str | None) -> Parsed:
    """Parse one generated text for ``task`` (``None``: task-agnostic; the task is inferred).

    Raises:
        ParseError: with a code naming what is missing or wrong (``no_question_answer``,
            ``empty_field``, ``bad_box``, ``too_few_options``, ``answer_not_in_options``,
            ``no_box_in_answer``, ``no_box_in_question``, ``no_region_in_question``,
            ``too_few_turns``, ``no_box_in_dialogue``).
    """
    turns = _pairs(text)
    question, answer = turns[0]["question"], turns[0]["answer"]
    dialogue = task in ("multi_turn_dialogue", "referential_dialogue") or (task is None and len(turns) > 1)
    q_text = " ".join(t["question"] for t in turns) if dialogue else question
    a_text = " ".join(t["answer"] for t in turns) if dialogue else answer
    q_boxes, q_points = parse_regions(q_text)
    a_boxes, a_points = parse_regions(a_text)
    p = Parsed(
        task=task or "",
        question=question,
        answer=answer,
        turns=turns if dialogue else [],
        question_boxes=q_boxes,
        answer_boxes=a_boxes,
        points=q_points + a_points,
    )
    options = {m[0]: m[1] for m in _OPTION.findall(question)}
    if options and (task in (None, "multi_choice_vqa")):
        p.options = [f"({k}) {v}" for k, v in sorted(options.items())]
        letter = option_letter(answer)
        if len(options) < 2:
            raise ParseError("too_few_options", f"{len(options)} option(s) in the question")
        if letter not in options:
            raise ParseError("answer_not_in_options", f"answer {answer!r} names none of {sorted(options)}")
        if not _names_option(answer, options[letter]):
            raise ParseError("answer_not_in_options", f"answer {answer!r} contradicts option ({letter}) {options[letter]!r}")
        p.answer_letter = letter
    p.task = task or _infer_task(p)
    _check_task(p, task)
    return p


def _check_task(p: Parsed, task: str | None) -> None:
    if task == "multi_choice_vqa" and not p.options:
        raise ParseError("too_few_options", "no (A)/(B)/... options in the question")
    if task == "rec" and not p.answer_boxes:
        raise ParseError("no_box_in_answer", "REC answers must give a box")
    if task == "reg" and not p.question_boxes:
        raise ParseError("no_box_in_question", "REG questions must give a box")
    if task == "pointqa" and not (p.points or p.question_boxes):
        raise ParseError("no_region_in_question", "PointQA questions must give a point or a box")
    if task == "q_ca" and not p.answer_boxes:
        raise ParseError("no_box_in_answer", "Q->CA reasoning must cite boxes")
    if task in ("multi_turn_dialogue", "referential_dialogue") and len(p.turns) < 2:
        raise ParseError("too_few_turns", f"{len(p.turns) or 1} turn(s); a dialogue needs 2 or more")
    if task == "referential_dialogue" and not (p.question_boxes or p.answer_boxes):
        raise ParseError("no_box_in_dialogue", "referential dialogue turns must carry boxes")
