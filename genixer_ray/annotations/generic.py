"""Readers of the generic-task releases: LLaVA conversations, VQAv2, GQA and A-OKVQA.

Each reader is a pair: ``records(ctx)`` yields ``(where, record)`` from the files as their authors
publish them, and ``samples(record, ctx)`` turns one record into canonical samples (raising
:class:`~genixer_ray.annotations.base.Skip` for a record that cannot be converted).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from genixer_ray.annotations.base import ConversionError, Skip, image_url, iter_json_records, load_json, text

OPTION_LETTERS = "ABCDEFGH"


# -- LLaVA: llava_v1_5_mix665k.json, llava_instruct_150k.json, ... (LLaVA's train.py reads them) --


def llava_records(ctx) -> Iterator[tuple[str, Any]]:
    """Records of a LLaVA conversation file (a JSON list, or JSON Lines)."""
    yield from iter_json_records(ctx.files["path"], ctx.storage_options)


def llava_samples(rec: dict, ctx) -> Iterator[dict]:
    """One exchange: Common VQA; several: Multi-turn dialogue. Text-only records are skipped."""
    if "image" not in rec:
        raise Skip("text_only", "no image (a text-only conversation)")
    conv = rec["conversations"]
    if not isinstance(conv, list) or len(conv) < 2 or len(conv) % 2:
        raise Skip("bad_roles", f"{len(conv) if isinstance(conv, list) else conv!r} turns; expected human/gpt pairs")
    roles = [t.get("from") if isinstance(t, dict) else None for t in conv]
    if roles != ["human", "gpt"] * (len(conv) // 2):
        raise Skip("bad_roles", f"roles {roles}; expected human, gpt, human, gpt, ...")
    turns = [
        (text(q["value"].replace("<image>", ""), "question"), text(a["value"], "answer"))
        for q, a in zip(conv[::2], conv[1::2])
    ]
    task = "common_vqa" if len(turns) == 1 else "multi_turn_dialogue"
    yield {"image": image_url(rec["image"], ctx.image_root), "task": task, "turns": turns}


# -- VQAv2: v2_OpenEnded_mscoco_{split}_questions.json + v2_mscoco_{split}_annotations.json -------


def vqav2_questions(ctx) -> tuple[list, str]:
    """The ``questions`` list of a VQAv2 questions file and the subtype its images are named by:
    its ``data_subtype``, except test-dev2015, a subset of test2015 whose images are test2015's
    (``COCO_test2015_...``; the VQA API and the test-dev server use those files)."""
    questions = load_json(ctx.files["questions"], ctx.storage_options)
    if not isinstance(questions, dict) or not isinstance(questions.get("questions"), list):
        raise ConversionError(f"{ctx.files['questions']} is not a VQAv2 questions file (no 'questions' list)")
    subtype = questions.get("data_subtype")
    if not isinstance(subtype, str) or not subtype:
        raise ConversionError(f"{ctx.files['questions']} names no data_subtype (e.g. train2014): image names need it")
    return questions["questions"], "test2015" if subtype == "test-dev2015" else subtype


def vqav2_image(question: dict, subtype: str, ctx) -> str:
    """A VQAv2 question's image, ``COCO_{subtype}_{image_id:012d}.jpg`` under the image root."""
    image_id = question["image_id"]
    if isinstance(image_id, bool) or not isinstance(image_id, int):
        raise Skip("bad_image_id", f"image_id {image_id!r} is not an integer")
    return image_url(f"COCO_{subtype}_{image_id:012d}.jpg", ctx.image_root)


def vqav2_records(ctx) -> Iterator[tuple[str, Any]]:
    """Questions joined with their annotations on ``question_id``, as the official VQA API does."""
    questions, subtype = vqav2_questions(ctx)
    annotations = load_json(ctx.files["annotations"], ctx.storage_options)
    if not isinstance(annotations, dict) or not isinstance(annotations.get("annotations"), list):
        raise ConversionError(f"{ctx.files['annotations']} is not a VQAv2 annotations file (no 'annotations' list)")
    by_id = {a.get("question_id"): a for a in annotations["annotations"] if isinstance(a, dict)}
    for n, q in enumerate(questions):
        yield f"question {n}", {"question": q, "annotation": by_id.get(q.get("question_id")) if isinstance(q, dict) else None,
                                "subtype": subtype}


def vqav2_samples(rec: dict, ctx) -> Iterator[dict]:
    """Common VQA with the annotators' most common answer; images ``COCO_{subtype}_{id:012d}.jpg``."""
    q, ann = rec["question"], rec["annotation"]
    if ann is None:
        raise Skip("no_annotation", f"question {q.get('question_id')!r} has no annotation")
    image = vqav2_image(q, rec["subtype"], ctx)
    answer = text(ann.get("multiple_choice_answer"), "answer")
    yield {"image": image, "task": "common_vqa", "turns": [(text(q["question"], "question"), answer)]}


# -- GQA: {split}_balanced_questions.json, {question id: record} -----------------------------------


def gqa_records(ctx) -> Iterator[tuple[str, Any]]:
    """The questions of a GQA questions file, by question id."""
    data = load_json(ctx.files["path"], ctx.storage_options)
    if not isinstance(data, dict):
        raise ConversionError(f"{ctx.files['path']} is not a GQA questions file (a JSON object keyed by question id)")
    yield from ((f"question {qid}", r) for qid, r in data.items())


def gqa_samples(rec: dict, ctx) -> Iterator[dict]:
    """Common VQA with the short answer; images ``{imageId}.jpg`` (GQA's images/ folder)."""
    name = f"{text(rec['imageId'], 'image_id')}.jpg"
    turns = [(text(rec["question"], "question"), text(rec.get("answer"), "answer"))]
    yield {"image": image_url(name, ctx.image_root), "task": "common_vqa", "turns": turns}


# -- A-OKVQA: aokvqa_v1p0_{split}.json --------------------------------------------------------------


def aokvqa_records(ctx) -> Iterator[tuple[str, Any]]:
    """The records of an A-OKVQA release file (a JSON list)."""
    yield from iter_json_records(ctx.files["path"], ctx.storage_options)


def aokvqa_samples(rec: dict, ctx) -> Iterator[dict]:
    """Multi-choice VQA; images ``{split}2017/{image_id:012d}.jpg`` under the COCO root (as the
    release's ``get_coco_path`` forms them). Test records (no answer) are skipped."""
    choices = rec["choices"]
    if not isinstance(choices, list) or not 2 <= len(choices) <= len(OPTION_LETTERS):
        raise Skip("bad_choices", f"choices {choices!r}")
    k = rec.get("correct_choice_idx")
    if k is None:
        raise Skip("no_answer", "no correct_choice_idx (a test record)")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(choices):
        raise Skip("bad_choices", f"correct_choice_idx {k!r} for {len(choices)} choices")
    image_id, split = rec["image_id"], rec["split"]
    if isinstance(image_id, bool) or not isinstance(image_id, int):
        raise Skip("bad_image_id", f"image_id {image_id!r} is not an integer")
    options = " ".join(f"({OPTION_LETTERS[i]}) {text(c, 'choice')}" for i, c in enumerate(choices))
    question = f"{text(rec['question'], 'question')} Options: {options}"
    answer = f"({OPTION_LETTERS[k]}) {choices[k].strip()}"
    name = f"{text(split, 'split')}2017/{image_id:012d}.jpg"
    yield {"image": image_url(name, ctx.image_root), "task": "multi_choice_vqa", "turns": [(question, answer)]}
