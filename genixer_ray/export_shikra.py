"""Export grounding rows as the JSON Lines that Shikra's datasets read.

Shikra's loaders take boxes in **pixels of the original image** and do the rest themselves: the
``Expand2square`` transform pads the image to a square and shifts the boxes, then
``BoxFormatProcess`` normalizes them by the padded size (``mllm/dataset/utils/transform.py``,
``process_function/box_process_function.py``). Our boxes are normalized to the original image, so
they are written back in pixels with the size stored on each row (``image_width``,
``image_height``). Files written into the output folder:

* ``REC_genixer.jsonl`` (``RECDataset``): ``{img_path, expression, bbox, height, width}``.
* ``GPT4GEN_genixer.jsonl`` (``GPT4Gen``, version ``bc``): REG, Q->CA and other one-turn grounded
  pairs: ``{img_path, boxes, height, width, question, question_boxes_seq, cot_with_ans,
  answer_boxes_seq, answer}``; each box group in the text becomes ``<ph_st><ph_ed>`` (which the
  loader turns into ``<boxes>`` right after the words before it).
* ``GPT4GEN_RD_genixer.jsonl``: referential dialogues, one record per round, as Shikra's RD file.
* ``pointQA_genixer.jsonl`` (``Point_QA_local``): ``{file_path, question, answer, bbox, point,
  img_w, img_h}``.

Rows of other tasks are counted as ``not_grounding``; each record keeps a ``genixer`` key with its
provenance and scores.
"""

from __future__ import annotations

import json
import re
from collections import Counter

from genixer_ray.errors import UserError
from genixer_ray.export import PROVENANCE, ImageCopier, committed_run, exported_rows, finite, selection
from genixer_ray.prompts import REC_QUESTIONS
from genixer_ray.tasks import BRACKET, ParseError, parse_regions

FILES = {"rec": "REC_genixer.jsonl", "pairs": "GPT4GEN_genixer.jsonl", "rd": "GPT4GEN_RD_genixer.jsonl", "pointqa": "pointQA_genixer.jsonl"}
PH = "<ph_st><ph_ed>"
# Our REC phrasings as patterns: the expression is what stood in <expr>.
_REC_PATTERNS = [re.compile("^" + re.escape(q).replace(re.escape("<expr>"), "(?P<expr>.+)") + "$", re.I) for q in REC_QUESTIONS]


def rec_expression(question: str) -> str:
    """The referring expression of a REC question (``Where is the red car?`` -> ``the red car``).

    A question in one of this project's REC phrasings gives its ``<expr>``; any other question is
    used whole, without its final question mark.
    """
    q = question.strip()
    for p in _REC_PATTERNS:
        if m := p.match(q):
            return m["expr"].strip()
    return q.rstrip("?").strip()


def to_pixels(box: list[float], w: int, h: int) -> list[float]:
    """A normalized ``[x1, y1, x2, y2]`` box (or ``[x, y]`` point) in pixels of a ``w`` x ``h`` image."""
    scale = [w, h] * (len(box) // 2)
    return [round(v * s, 2) for v, s in zip(box, scale)]


def _marked(text: str, boxes: list[list[float]], w: int, h: int) -> tuple[str, list[list[int]]]:
    """``text`` with each ``[...]`` group of boxes replaced by phrase markers, and its boxes_seq.

    The group's pixel boxes are appended to ``boxes``; points and malformed groups stay as text.
    """
    seq: list[list[int]] = []

    def repl(m: re.Match) -> str:
        try:
            group, points = parse_regions(m.group(0))
        except ParseError:
            return m.group(0)
        if not group or points:
            return m.group(0)
        seq.append(list(range(len(boxes), len(boxes) + len(group))))
        boxes.extend(to_pixels(b, w, h) for b in group)
        return PH

    out = BRACKET.sub(repl, text)
    return re.sub(r"\s+" + re.escape(PH), PH, out), seq


def _plain(text: str) -> str:
    return " ".join(BRACKET.sub("", text).split())


def shikra_records(row: dict, image: str) -> tuple[str, list[dict]] | None:
    """``(file key, records)`` of one parsed row, or ``None`` for a task Shikra's files do not hold."""
    w, h, task = row["image_width"], row["image_height"], row.get("parsed_task")
    meta = {"genixer": {"image_id": row["image_id"], "sample": row.get("sample") or 0, "task": task, **{k: finite(row.get(k)) for k in PROVENANCE}}}
    if task == "rec" and len(row.get("answer_boxes") or []) == 1:
        rec = {"img_path": image, "expression": rec_expression(row["question"]), "bbox": to_pixels(row["answer_boxes"][0], w, h),
               "dataset_name": "genixer", "height": h, "width": w}
        return "rec", [rec | meta]
    if task == "pointqa":
        q_boxes, points = row.get("question_boxes") or [], row.get("points") or []
        rec = {"file_path": image, "question": _plain(row["question"]), "answer": row["answer"],
               "bbox": to_pixels(q_boxes[0], w, h) if q_boxes else None, "point": to_pixels(points[0], w, h) if points else None,
               "img_w": w, "img_h": h}
        return "pointqa", [rec | meta]
    if task not in ("reg", "q_ca", "rec", "referential_dialogue"):
        return None
    turns = row.get("turns") or [{"question": row["question"], "answer": row["answer"]}]
    boxes: list[list[float]] = []
    out = []
    for t in turns:
        question, q_seq = _marked(t["question"], boxes, w, h)
        answer, a_seq = _marked(t["answer"], boxes, w, h)
        out.append({"question": question, "question_boxes_seq": q_seq, "cot_with_ans": answer, "answer_boxes_seq": a_seq,
                    "answer": _plain(t["answer"])})
    base = {"img_path": image, "boxes": boxes, "height": h, "width": w}
    return ("rd" if task == "referential_dialogue" else "pairs"), [base | r | meta for r in out]


def export_shikra(
    run: str, out_dir: str, *, storage_options: dict | None = None, image_root: str | None = None, view: str = "kept",
    copy_images: bool = False, cluster_cap: int | None = None, cluster_score: str = "judge_p_yes",
) -> dict:
    """Write the run's grounding rows into ``out_dir`` as Shikra's JSON Lines; return counts.

    Images follow :func:`genixer_ray.export.export_llava`'s rule: a local image under
    ``image_root`` is named relative to it (Shikra's ``image_folder``), any other is copied once
    into ``out_dir/images/`` and named relative to ``out_dir``. ``view``, ``cluster_cap`` and
    ``cluster_score``: which rows, as for :func:`~genixer_ray.export.export_llava`.

    Raises:
        ValueError: no committed shard, or rows without their image size (a run written before
            the size was stored).
    """
    import fsspec

    so = storage_options or {}
    store, n_shards = committed_run(run, so)
    condition, left_out = selection(store, view, cluster_cap, cluster_score)
    out_dir = out_dir.rstrip("/")
    copier = ImageCopier(f"{out_dir}/images", "images", so)
    fs, root = fsspec.core.url_to_fs(out_dir, **so)
    fs.makedirs(root, exist_ok=True)
    files = {k: fsspec.open(f"{out_dir}/{name}", "w", **so).open() for k, name in FILES.items()}
    counts: Counter = Counter()
    missing: dict[str, str] = {}
    try:
        for row, image in exported_rows(
            store, condition=condition, image_root=image_root, copy_images=copy_images, copier=copier, missing=missing, left_out=left_out,
        ):
            if not row.get("image_width") or not row.get("image_height"):
                raise UserError(f"row {row['image_id']!r} has no image size (a run written before sizes were stored)")
            got = shikra_records(row, image)
            if got is None:
                counts["not_grounding"] += 1
                continue
            key, records = got
            for r in records:
                files[key].write(json.dumps(r, allow_nan=False) + "\n")
            counts[key] += len(records)
    finally:
        for f in files.values():
            f.close()
    if missing:
        counts["skipped_missing_image"] = len(missing)
    if left_out:
        counts["left_out_by_cluster_cap"] = sum(map(len, left_out.values()))
    return {"output": out_dir, "shards": n_shards, "images_copied": len(copier.written), **dict(counts)}
