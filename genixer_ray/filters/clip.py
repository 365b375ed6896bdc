"""CLIP scoring through open_clip: any architecture and weights, the tiny local model in tests."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from genixer_ray.config import ClipFilterConfig
from genixer_ray.filters.base import ScoringStage
from genixer_ray.stages import row_image
from genixer_ray.tasks import BRACKET


def open_clip_spec(model: str) -> tuple[str, str | None]:
    """Map a model spec to open_clip's ``(model_name, pretrained)``.

    ``tiny`` is the locally built tiny CLIP; an existing directory (holding
    ``open_clip_config.json`` and weights) is opened with ``local-dir:``; ``hf-hub:org/repo``
    passes through; ``ARCH/TAG`` names a built-in architecture and pretrained tag
    (``ViT-B-32/laion2b_s34b_b79k``). A bare ``ARCH`` (random weights) is refused when the config
    is validated (:func:`genixer_ray.models.check_model_spec`).
    """
    from genixer_ray.models import resolve_model

    resolved = resolve_model(model, kind="clip")
    if Path(resolved).is_dir():
        return f"local-dir:{resolved}", None
    if resolved.startswith("hf-hub:"):
        return resolved, None
    arch, _, tag = resolved.partition("/")
    return arch, tag or None


@functools.lru_cache(maxsize=2)
def clip_scorer(model: str) -> ClipScorer:
    """This process's :class:`ClipScorer` for ``model`` (built once)."""
    return ClipScorer(model)


class ClipScorer:
    """An open_clip model with its preprocessing and tokenizer, scoring image-text pairs."""

    def __init__(self, model: str = "tiny", *, device: str | None = None):
        import open_clip
        import torch

        name, pretrained = open_clip_spec(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
        self.model = self.model.to(self.device).eval()
        self.tokenizer = open_clip.get_tokenizer(name)

    def scores(self, images: Sequence[np.ndarray], texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(cosine, raw)`` of ``images[i]`` with ``texts[i]``, in one batch.

        ``cosine``: the dot product of L2-normalized features, in [-1, 1], comparable across
        models. ``raw``: the dot product of the unnormalized (projected) features, the quantity
        Genixer's script compared against 60 (``get_image_features @ get_text_features.T``).
        """
        import torch
        from PIL import Image

        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        if not images:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32)
        pixels = torch.stack([self.preprocess(Image.fromarray(im)) for im in images]).to(self.device)
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode():
            img = self.model.encode_image(pixels).float()
            txt = self.model.encode_text(tokens).float()
            raw = (img * txt).sum(dim=-1)
            cos = (torch.nn.functional.normalize(img, dim=-1) * torch.nn.functional.normalize(txt, dim=-1)).sum(dim=-1)
        return cos.cpu().numpy(), raw.cpu().numpy()

    def image_tensor(self, image):
        """``image`` (a PIL image or an RGB ``uint8`` array) as the model's input (its preprocessing)."""
        from PIL import Image

        return self.preprocess(Image.fromarray(image) if isinstance(image, np.ndarray) else image)

    def embed(self, tensors: Sequence) -> np.ndarray:
        """L2-normalized image embeddings (``float32``, one row per input) of :meth:`image_tensor`'s outputs, in one batch."""
        import torch

        if not tensors:
            return np.zeros((0, 0), dtype=np.float32)
        with torch.inference_mode():
            features = self.model.encode_image(torch.stack(list(tensors)).to(self.device)).float()
            return torch.nn.functional.normalize(features, dim=-1).cpu().numpy()

    def similarity(self, images: Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """Cosine similarity in [-1, 1] of ``images[i]`` with ``texts[i]`` (see :meth:`scores`)."""
        return self.scores(images, texts)[0]


_CLAUSE_END = re.compile(r".*[.!?;:\]]", re.S)


def strip_regions(text: str) -> str:
    """``text`` without its ``[...]`` coordinates, single-spaced."""
    return " ".join(BRACKET.sub(" ", text).split())


def _phrases_before_boxes(text: str) -> list[str]:
    """For each box or point written in ``text``, the words of its clause before the bracket."""
    out, start = [], 0
    for m in BRACKET.finditer(text):
        before = text[start : m.start()]
        clause = before[e.end() :] if (e := _CLAUSE_END.match(before)) else before
        out += [" ".join(clause.split())] * len(m.group(1).split(";"))
        start = m.end()
    return out


def region_texts(row: dict) -> list[tuple[list[float], str]]:
    """Each box of a row with the text its crop is scored against.

    A box in the answer (REC, Q->CA) is matched with the words before it in its clause, or the
    question when there are none (an answer that is only a box); a box in the question (REG,
    PointQA) with the answer, which describes it. Coordinates are removed from every text.
    """
    pairs = []
    q, a = row["question"] or "", row["answer"] or ""
    a_phrases = _phrases_before_boxes(a)
    for i, box in enumerate(row.get("answer_boxes") or []):
        phrase = a_phrases[i] if len(a_phrases) == len(row["answer_boxes"]) else ""
        pairs.append((box, phrase if re.search(r"[A-Za-z]{2}", phrase) else strip_regions(q)))
    pairs += [(box, strip_regions(a)) for box in row.get("question_boxes") or []]
    return pairs


def crop_box(
    image: np.ndarray, box: Sequence[float], min_side: float, *, min_pixels: int = 0, original: tuple[int, int] | None = None,
) -> np.ndarray | str:
    """The pixels inside a normalized box, or the reason it cannot be scored.

    Returns ``"box_outside_image"`` for a box not within [0, 1] or with no extent, and
    ``"box_too_small"`` when its width or height is below ``min_side`` of the image's (or 1 px),
    or below ``min_pixels`` pixels of the ``original`` ``(width, height)`` (the image before any
    downscale), measured as Genixer's script does: ``int(x2 * w) - int(x1 * w)``.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
        return "box_outside_image"
    h, w = image.shape[:2]
    c1, r1 = int(np.floor(x1 * w)), int(np.floor(y1 * h))
    c2, r2 = int(np.ceil(x2 * w)), int(np.ceil(y2 * h))
    if x2 - x1 < min_side or y2 - y1 < min_side or c2 - c1 < 1 or r2 - r1 < 1:
        return "box_too_small"
    ow, oh = original or (w, h)
    if min_pixels and (int(x2 * ow) - int(x1 * ow) < min_pixels or int(y2 * oh) - int(y1 * oh) < min_pixels):
        return "box_too_small"
    return np.ascontiguousarray(image[r1:r2, c1:c2])


class ClipStage(ScoringStage):
    """Adds CLIP scores to every ``ok`` row: each box's crop against its text, else the whole image.

    ``clip_region_scores`` holds one score per box (for a row without boxes, the one score of the
    whole image against question and answer); ``clip_score`` is the lowest of them, since every
    region must match its words, and ``clip_raw_score`` the lowest of the paper's raw dot
    products. A box that cannot be scored sets ``clip_reason`` and no score.
    """

    name = "clip"

    def __init__(self, cfg: ClipFilterConfig):
        self.cfg = cfg
        self.scorer = ClipScorer(cfg.model)

    def score(self, rows: list[dict]) -> list[dict]:
        """Score ``ok`` rows; all their crops go through CLIP in chunks of ``batch_size``."""
        out: list[dict] = [{} for _ in rows]
        pairs: list[tuple[int, np.ndarray, str]] = []
        for i, row in enumerate(rows):
            image = row_image(row)
            regions = region_texts(row)
            if not regions:
                pairs.append((i, image, strip_regions(f"{row['question']} {row['answer']}")))
                continue
            original = (row["image_width"], row["image_height"]) if row.get("image_width") else None
            crops = [crop_box(image, box, self.cfg.min_box_side, min_pixels=self.cfg.min_box_pixels, original=original)
                     for box, _ in regions]
            if reason := next((c for c in crops if isinstance(c, str)), None):
                out[i] = {"clip_score": None, "clip_raw_score": None, "clip_region_scores": [], "clip_reason": reason}
                continue
            pairs += [(i, crop, text) for crop, (_, text) in zip(crops, regions)]
        scores: dict[int, list[float]] = {}
        raws: dict[int, list[float]] = {}
        n = self.cfg.batch_size
        for start in range(0, len(pairs), n):
            chunk = pairs[start : start + n]
            cos, raw = self.scorer.scores([c for _, c, _ in chunk], [t for _, _, t in chunk])
            for (i, _, _), c, r in zip(chunk, cos, raw):
                scores.setdefault(i, []).append(float(c))
                raws.setdefault(i, []).append(float(r))
        for i, region_scores in scores.items():
            out[i] = {"clip_score": min(region_scores), "clip_raw_score": min(raws[i]), "clip_region_scores": region_scores,
                      "clip_reason": None}
        return out
