"""Instruction data for the generator (Genixer steps 1 and 2): public formats -> training samples.

Each converter reads one annotation file and yields canonical samples
``{"sample_id", "image", "task", "turns": [(question, answer), ...]}`` with boxes already
normalized to [0, 1] and written as text. :func:`build_instruction_set` then applies the two-level
templates: every sample gets a generic instruction, and a configurable share also gets its task
sentence (task-specific); the target is the ``Question: ... Answer: ...`` text the generator
learns to write.

Formats (all JSON lists of records unless said otherwise; ``image`` is relative to the source's
image root; ``width``/``height`` are read from the image when a record lacks them):

* ``llava``: ``{"image", "conversations": [{"from": "human"|"gpt", "value"}]}``; one exchange is
  Common VQA, several are Multi-turn dialogue.
* ``vqa``: VQAv2 (``{"questions": [...], "annotations": [...]}`` joined on ``question_id``, answer
  ``multiple_choice_answer``) or GQA (``{qid: {"imageId", "question", "answer"}}``); image file
  ``{image_id}.jpg`` unless an ``image`` field is present.
* ``aokvqa``: ``{"image" or "image_id", "question", "choices", "correct_choice_idx"}`` -> Multi-choice.
* ``refcoco``: ``{"image", "bbox": [x, y, w, h] (pixels), "sentences": [...]}`` -> REC and REG.
* ``pointqa``: ``{"image", "question" with a ``<region>`` placeholder, "point": [x, y] or
  "bbox": [x, y, w, h] (pixels), "answer"}`` -> PointQA.
* ``flickr30k``: ``{"image", "caption" with ``[/EN#<id>/<type> phrase]`` tags, "boxes": {id:
  [[x, y, w, h], ...]}}`` -> a grounded description citing boxes (trained as Q->CA).
* ``gpt4gen``: ``{"image", "boxes": [[x1, y1, x2, y2], ...] (pixels), "kind": "rd"|"qca",
  "turns": [{"question", "answer", "question_boxes_seq", "answer_boxes_seq"}]}`` where each
  ``<boxes>`` placeholder takes the boxes of the next entry of its ``*_boxes_seq``.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any, Iterator

import fsspec

from genixer_ray.inputs import resolve_under_root
from genixer_ray.seeding import derive_seed
from genixer_ray.tasks import GENERIC_INSTRUCTIONS, TASKS, format_boxes, qa_text

FORMATS = ("llava", "vqa", "aokvqa", "refcoco", "pointqa", "flickr30k", "gpt4gen")


class ConversionError(ValueError):
    """An annotation file or record that does not match its declared format."""


def _load_json(path: str, storage_options: dict) -> Any:
    with fsspec.open(path, "rt", encoding="utf-8", **storage_options) as f:
        if path.endswith(".jsonl"):
            return [json.loads(line) for line in f if line.strip()]
        return json.load(f)


def _image_size(path: str, rec: dict, storage_options: dict) -> tuple[float, float]:
    if rec.get("width") and rec.get("height"):
        return float(rec["width"]), float(rec["height"])
    from PIL import Image

    with fsspec.open(path, "rb", **storage_options) as f:
        w, h = Image.open(f).size  # reads the header only
    return float(w), float(h)


def _xywh(b: list[float], w: float, h: float) -> list[float]:
    return [b[0] / w, b[1] / h, (b[0] + b[2]) / w, (b[1] + b[3]) / h]


def _xyxy(b: list[float], w: float, h: float) -> list[float]:
    return [b[0] / w, b[1] / h, b[2] / w, b[3] / h]


def _strip_image_token(text: str) -> str:
    return text.replace("<image>", "").strip()


def convert(fmt: str, path: str, *, image_root: str, storage_options: dict | None = None) -> Iterator[dict]:
    """Yield canonical samples from one annotation file of format ``fmt`` (see the module doc).

    Args:
        fmt: one of :data:`FORMATS`.
        path: the annotation file (any fsspec URL; ``.json`` or ``.jsonl``).
        image_root: folder that the records' image names are relative to.
        storage_options: fsspec options for ``path`` and the images.
    """
    if fmt not in FORMATS:
        raise ConversionError(f"unknown format {fmt!r}; known: {FORMATS}")
    so = storage_options or {}
    data = _load_json(path, so)
    records = _records(fmt, data)
    for n, rec in enumerate(records):
        name = rec.get("image") or rec.get("file_name") or (f"{rec['image_id']}.jpg" if "image_id" in rec else None)
        if not name:
            raise ConversionError(f"{path}: record {n} names no image")
        image = resolve_under_root(str(name), image_root)
        if image is None:
            raise ConversionError(f"{path}: record {n}: image {name!r} escapes {image_root!r}")
        try:
            for k, (task, turns) in enumerate(_SAMPLES[fmt](rec, image, so)):
                yield {"sample_id": f"{fmt}:{path.rsplit('/', 1)[-1]}:{n}:{k}", "image": image, "task": task, "turns": turns}
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise ConversionError(f"{path}: record {n} is not valid {fmt}: {type(e).__name__}: {e}") from None


def _records(fmt: str, data: Any) -> list[dict]:
    if fmt == "vqa" and isinstance(data, dict) and "questions" in data:
        answers = {a["question_id"]: a for a in data.get("annotations", [])}
        return [{**q, "answer": answers[q["question_id"]]["multiple_choice_answer"]} for q in data["questions"]]
    if fmt == "vqa" and isinstance(data, dict):  # GQA: {question id: record}
        return [{**r, "image_id": r.get("imageId", r.get("image_id"))} for _, r in sorted(data.items())]
    if not isinstance(data, list):
        raise ConversionError(f"{fmt}: expected a list of records, got {type(data).__name__}")
    return data


def _llava(rec, image, so):
    conv = rec["conversations"]
    turns = [(_strip_image_token(q["value"]), a["value"].strip()) for q, a in zip(conv[::2], conv[1::2])]
    yield ("common_vqa" if len(turns) == 1 else "multi_turn_dialogue"), turns


def _vqa(rec, image, so):
    yield "common_vqa", [(rec["question"], str(rec["answer"]))]


def _aokvqa(rec, image, so):
    letters = "ABCDEFGH"
    choices = rec["choices"]
    options = " ".join(f"({letters[i]}) {c}" for i, c in enumerate(choices))
    k = int(rec["correct_choice_idx"])
    yield "multi_choice_vqa", [(f"{rec['question']} Options: {options}", f"({letters[k]}) {choices[k]}")]


def _refcoco(rec, image, so):
    w, h = _image_size(image, rec, so)
    box = format_boxes([_xywh(rec["bbox"], w, h)])
    for sent in rec.get("sentences") or [rec["sentence"]]:
        yield "rec", [(f"Where is {sent}?", box)]
        yield "reg", [(f"What is in the region {box}?", sent)]


def _pointqa(rec, image, so):
    w, h = _image_size(image, rec, so)
    region = [[rec["point"][0] / w, rec["point"][1] / h]] if rec.get("point") else [_xywh(rec["bbox"], w, h)]
    yield "pointqa", [(rec["question"].replace("<region>", format_boxes(region)), rec["answer"])]


_ENTITY = re.compile(r"\[/EN#(\d+)/[^ \]]+ ([^\]]+)\]")


def _flickr30k(rec, image, so):
    w, h = _image_size(image, rec, so)

    def ground(m: re.Match) -> str:
        boxes = rec["boxes"].get(m.group(1))
        return f"{m.group(2)} {format_boxes([_xywh(b, w, h) for b in boxes])}" if boxes else m.group(2)

    yield "q_ca", [("What does the image show? Cite each object with its coordinates.", _ENTITY.sub(ground, rec["caption"]))]


def _gpt4gen(rec, image, so):
    w, h = _image_size(image, rec, so)
    boxes = [_xyxy(b, w, h) for b in rec["boxes"]]

    def fill(text: str, seq: list[list[int]]) -> str:
        parts = text.split("<boxes>")
        if len(parts) - 1 != len(seq):
            raise ValueError(f"{len(parts) - 1} <boxes> placeholders but {len(seq)} box groups")
        return "".join(p + (format_boxes([boxes[i] for i in seq[j]]) if j < len(seq) else "") for j, p in enumerate(parts))

    turns = [(fill(t["question"], t.get("question_boxes_seq", [])), fill(t["answer"], t.get("answer_boxes_seq", []))) for t in rec["turns"]]
    yield ("referential_dialogue" if rec["kind"] == "rd" else "q_ca"), turns


_SAMPLES = {
    "llava": _llava, "vqa": _vqa, "aokvqa": _aokvqa, "refcoco": _refcoco,
    "pointqa": _pointqa, "flickr30k": _flickr30k, "gpt4gen": _gpt4gen,
}


def build_instruction_set(samples: Iterator[dict], *, seed: int, specific_share: float, task_weights: dict[str, float]) -> Iterator[dict]:
    """Apply the two-level templates and the task mix to canonical samples.

    A task's weight ``w`` keeps each of its samples ``floor(w)`` times plus once more with
    probability ``w - floor(w)`` (so 0.5 halves a task, 2 doubles it, each copy with its own
    template). Each copy is task-specific with probability ``specific_share``. Every choice is
    drawn from ``(seed, sample id, copy)``, so the set is reproducible.

    Yields rows ``{"sample_id", "image", "task", "mode", "template_id", "instruction", "target"}``.
    """
    for s in samples:
        w = task_weights.get(s["task"], 1.0)
        rng = random.Random(derive_seed(seed, f"mix:{s['sample_id']}"))
        copies = int(w) + (1 if rng.random() < w - int(w) else 0)
        for c in range(copies):
            r = random.Random(derive_seed(seed, f"template:{s['sample_id']}:{c}"))
            idx = r.randrange(len(GENERIC_INSTRUCTIONS))
            specific = r.random() < specific_share
            instruction = GENERIC_INSTRUCTIONS[idx] + (f" {TASKS[s['task']].sentence}" if specific else "")
            yield {
                "sample_id": f"{s['sample_id']}#{c}",
                "image": s["image"],
                "task": s["task"],
                "mode": "specific" if specific else "agnostic",
                "template_id": f"g{idx:02d}",
                "instruction": instruction,
                "target": qa_text(s["turns"]),
            }
