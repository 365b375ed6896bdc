"""Readers of the grounding releases: refer (RefCOCO/+/g), Shikra's REC and PointQA JSON Lines,
Flickr30k Entities and GPT4Gen.

Boxes are normalized to the original image with :mod:`genixer_ray.annotations.base`; REC and REG
samples carry ``referring`` (the expression and its box as text) and get their question from the
prompt profile's phrasing pool when the instruction set is built.
"""

from __future__ import annotations

import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import fsspec

from genixer_ray.annotations.base import (
    ConversionError,
    Skip,
    image_size,
    image_url,
    iter_json_records,
    load_json,
    load_plain_pickle,
    norm_point,
    norm_xywh,
    norm_xyxy,
    open_binary,
    text,
)
from genixer_ray.tasks import format_boxes


def _referring(image: str, expression: str, box: list[float]) -> Iterator[dict]:
    referring = {"expression": expression, "region": format_boxes([box])}
    yield {"image": image, "task": "rec", "turns": [], "referring": referring}
    yield {"image": image, "task": "reg", "turns": [], "referring": referring}


# -- refer: refs(unc).p / refs(umd).p / refs(google).p + instances.json ---------------------------


def refer_records(ctx) -> Iterator[tuple[str, Any]]:
    """The refs of the chosen splits, each joined with its annotation (bbox) and image entry, as
    the refer toolkit's ``REFER`` class joins them."""
    refs = load_plain_pickle(ctx.files["refs"], ctx.storage_options)
    instances = load_json(ctx.files["instances"], ctx.storage_options)
    if not isinstance(refs, list):
        raise ConversionError(f"{ctx.files['refs']} is not a refer refs file (a list of refs)")
    if not isinstance(instances, dict) or not all(isinstance(instances.get(k), list) for k in ("images", "annotations")):
        raise ConversionError(f"{ctx.files['instances']} is not a refer instances file (no images/annotations lists)")
    images = {i.get("id"): i for i in instances["images"] if isinstance(i, dict)}
    anns = {a.get("id"): a for a in instances["annotations"] if isinstance(a, dict)}
    for n, ref in enumerate(refs):
        if not isinstance(ref, dict):
            yield f"ref {n}", Skip("bad_record", f"a {type(ref).__name__}, not a ref")
            continue
        if ctx.splits and ref.get("split") not in ctx.splits:
            continue
        yield f"ref {ref.get('ref_id', n)}", {"ref": ref, "ann": anns.get(ref.get("ann_id")), "image": images.get(ref.get("image_id"))}


def refer_samples(rec: dict, ctx) -> Iterator[dict]:
    """REC and REG for each of a ref's sentences (``sent``), box from the annotation (xywh)."""
    ref, ann, img = rec["ref"], rec["ann"], rec["image"]
    if ann is None or img is None:
        raise Skip("no_annotation", f"ann_id {ref.get('ann_id')!r} or image_id {ref.get('image_id')!r} not in instances")
    url = image_url(img["file_name"], ctx.image_root)
    box = norm_xywh(ann["bbox"], *image_size(url, img.get("width"), img.get("height"), ctx.storage_options))
    sentences = ref["sentences"]
    if not isinstance(sentences, list) or not sentences:
        raise Skip("no_expression", "no sentences")
    for s in sentences:
        yield from _referring(url, text(s.get("sent") if isinstance(s, dict) else None, "expression"), box)


# -- Shikra's REC JSON Lines (REC_ref3_train.jsonl, REC_refcoco_unc_*.jsonl, ...) ------------------


def rec_jsonl_records(ctx) -> Iterator[tuple[str, Any]]:
    """Records ``{img_path, expression, bbox (pixel xyxy), height, width}``."""
    yield from iter_json_records(ctx.files["path"], ctx.storage_options)


def rec_jsonl_samples(rec: dict, ctx) -> Iterator[dict]:
    """REC and REG from one expression and its pixel ``[x1, y1, x2, y2]`` box."""
    url = image_url(rec.get("img_path"), ctx.image_root)
    box = norm_xyxy(rec["bbox"], *image_size(url, rec.get("width"), rec.get("height"), ctx.storage_options))
    yield from _referring(url, text(rec["expression"], "expression"), box)


# -- PointQA as redistributed with Shikra (pointQA_local_train.jsonl) ------------------------------


def pointqa_records(ctx) -> Iterator[tuple[str, Any]]:
    """Records ``{file_path, question, answer, bbox (pixel xyxy), point, img_w, img_h}``."""
    yield from iter_json_records(ctx.files["path"], ctx.storage_options)


def pointqa_samples(rec: dict, ctx) -> Iterator[dict]:
    """Two PointQA samples per record, the region given as the box and as the point (Genixer's
    ``b`` and ``p`` variants); the region follows the question."""
    url = image_url(rec.get("file_path"), ctx.image_root)
    w, h = image_size(url, rec.get("img_w"), rec.get("img_h"), ctx.storage_options)
    question, answer = text(rec["question"], "question"), text(rec["answer"], "answer")
    for region in ([norm_xyxy(rec["bbox"], w, h)], [norm_point(rec["point"], w, h)]):
        yield {"image": url, "task": "pointqa", "turns": [(f"{question} {format_boxes(region)}", answer)]}


# -- Flickr30k Entities: Sentences/{id}.txt + Annotations/{id}.xml ---------------------------------

_ENTITY = re.compile(r"\[/EN#(\d+)((?:/[^\s\]]+)*) ([^\]]+)\]")
GROUNDED_CAPTION_QUESTION = "What does the image show? Cite each object with its coordinates."


def flickr30k_records(ctx) -> Iterator[tuple[str, Any]]:
    """One record per sentence: the ids of the ``index`` file (``train.txt``), or every sentence
    file, each joined with its image's annotation XML."""
    so, sentences, annotations = ctx.storage_options, ctx.files["sentences"].rstrip("/"), ctx.files["annotations"].rstrip("/")
    if "index" in ctx.files:
        with open_binary(ctx.files["index"], so) as f:
            ids = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    else:
        fs, root = fsspec.core.url_to_fs(sentences, **so)
        if not fs.isdir(root):
            raise ConversionError(f"no Sentences folder at {sentences}")
        ids = sorted(posixpath.basename(p)[: -len(".txt")] for p in fs.ls(root, detail=False) if p.endswith(".txt"))
    for image_id in ids:
        try:
            with open_binary(f"{annotations}/{image_id}.xml", so) as f:
                boxes, size = _flickr_annotation(f.read())
            with open_binary(f"{sentences}/{image_id}.txt", so) as f:
                lines = [s for s in f.read().decode("utf-8", "replace").split("\n") if s.strip()]
        except ConversionError as e:
            yield f"image {image_id}", Skip("no_annotation", str(e))
            continue
        except ET.ParseError as e:
            yield f"image {image_id}", Skip("bad_xml", str(e))
            continue
        for k, sentence in enumerate(lines):
            yield f"image {image_id} sentence {k}", {"image_id": image_id, "sentence": sentence, "boxes": boxes, "size": size}


def _flickr_annotation(data: bytes) -> tuple[dict[str, list[list[int]]], tuple[Any, Any]]:
    """``({entity id: [[x1, y1, x2, y2], ...]}, (width, height))`` from one annotation XML.

    The XML's coordinates are 1-based; like the dataset's own parser, 1 is subtracted.
    """
    root = ET.fromstring(data)
    size = root.find("size")
    width = int(size.findtext("width")) if size is not None and size.findtext("width") else None
    height = int(size.findtext("height")) if size is not None and size.findtext("height") else None
    boxes: dict[str, list[list[int]]] = {}
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue  # a scene or "no box" entity: cited by its words only
        box = [int(bb.findtext(k)) - 1 for k in ("xmin", "ymin", "xmax", "ymax")]
        for name in obj.findall("name"):
            boxes.setdefault(name.text, []).append(box)
    return boxes, (width, height)


def flickr30k_samples(rec: dict, ctx) -> Iterator[dict]:
    """A grounded description (trained as Q->CA): each boxed phrase followed by its boxes."""
    url = image_url(f"{rec['image_id']}.jpg", ctx.image_root)
    w, h = image_size(url, *rec["size"], ctx.storage_options)

    def ground(m: re.Match) -> str:
        boxes = rec["boxes"].get(m.group(1))
        return f"{m.group(3)} {format_boxes([norm_xyxy(b, w, h) for b in boxes])}" if boxes else m.group(3)

    caption = _ENTITY.sub(ground, rec["sentence"]).strip()
    if "[/EN#" in caption:
        raise Skip("bad_sentence", f"unbalanced entity tag in {rec['sentence']!r}")
    if not any(m.group(1) in rec["boxes"] for m in _ENTITY.finditer(rec["sentence"])):
        raise Skip("no_boxes", "no phrase of the sentence has a box")
    yield {"image": url, "task": "q_ca", "turns": [(GROUNDED_CAPTION_QUESTION, caption)]}


# -- GPT4Gen (Shikra's release): GPT4GEN_BoxCoT_train.jsonl, GPT4GEN_RD_BoxCoT_train.jsonl ---------

PHRASE_START, PHRASE_END = "<ph_st>", "<ph_ed>"


def gpt4gen_records(ctx) -> Iterator[tuple[str, Any]]:
    """Records ``{img_path, boxes (pixel xyxy), width, height, question, question_boxes_seq,
    cot_with_ans, answer_boxes_seq}`` (one question and its boxed answer each)."""
    yield from iter_json_records(ctx.files["path"], ctx.storage_options)


def _cite(text_: str, boxes: list[list[float]], seq: Any) -> str:
    """``<ph_st>phrase<ph_ed>`` becomes ``phrase [boxes]``, the boxes of the seq's next entry."""
    if text_.count(PHRASE_START) != text_.count(PHRASE_END) or not isinstance(seq, list):
        raise Skip("box_seq_mismatch", f"unbalanced phrase markers or no box sequence in {text_[:80]!r}")
    parts = text_.replace(PHRASE_START, "").split(PHRASE_END)
    if len(parts) - 1 != len(seq):
        raise Skip("box_seq_mismatch", f"{len(parts) - 1} phrases but {len(seq)} box groups")
    out = parts[0]
    for group, rest in zip(seq, parts[1:]):
        try:
            out += f" {format_boxes([boxes[i] for i in group])}{rest}"
        except (IndexError, TypeError):
            raise Skip("box_seq_mismatch", f"box group {group!r} of {len(boxes)} boxes") from None
    return out


def _gpt4gen_turn(rec: dict, ctx) -> tuple[str, tuple[str, str]]:
    url = image_url(rec.get("img_path"), ctx.image_root)
    w, h = image_size(url, rec.get("width"), rec.get("height"), ctx.storage_options)
    if not isinstance(rec["boxes"], list):
        raise Skip("bad_box", f"boxes {rec['boxes']!r}")
    boxes = [norm_xyxy(b, w, h) for b in rec["boxes"]]
    question = _cite(text(rec["question"], "question"), boxes, rec.get("question_boxes_seq") or [])
    answer = _cite(text(rec["cot_with_ans"], "answer"), boxes, rec.get("answer_boxes_seq") or [])
    return url, (question, answer)


def gpt4gen_qca_samples(rec: dict, ctx) -> Iterator[dict]:
    """Q->CA: a question whose answer reasons with boxed phrases."""
    url, turn = _gpt4gen_turn(rec, ctx)
    yield {"image": url, "task": "q_ca", "turns": [turn]}


def gpt4gen_rd_records(ctx) -> Iterator[tuple[str, Any]]:
    """The RD file's rounds, consecutive rounds on the same image and boxes joined into one dialogue."""
    group: list[dict] = []
    where = ""
    for w, rec in gpt4gen_records(ctx):
        same = group and isinstance(rec, dict) and (rec.get("img_path"), rec.get("boxes")) == (group[0].get("img_path"), group[0].get("boxes"))
        if group and not same:
            yield where, group
            group = []
        if not isinstance(rec, dict):
            yield w, rec
            continue
        where = where if group else w
        group.append(rec)
    if group:
        yield where, group


def gpt4gen_rd_samples(rounds: list[dict], ctx) -> Iterator[dict]:
    """Referential dialogue: one turn per round, boxes cited in questions and answers."""
    turns = [_gpt4gen_turn(r, ctx) for r in rounds]
    yield {"image": turns[0][0], "task": "referential_dialogue", "turns": [t for _, t in turns]}
