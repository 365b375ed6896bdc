"""CLIP scoring through open_clip: any architecture and weights, the tiny local model in tests."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def open_clip_spec(model: str) -> tuple[str, str | None]:
    """Map a model spec to open_clip's ``(model_name, pretrained)``.

    ``tiny`` is the locally built tiny CLIP; an existing directory (holding
    ``open_clip_config.json`` and weights) is opened with ``local-dir:``; ``hf-hub:org/repo``
    passes through; ``ARCH/TAG`` names a built-in architecture and pretrained tag
    (``ViT-B-32/laion2b_s34b_b79k``); a bare ``ARCH`` gets random weights.
    """
    from genixer_ray.tiny_models import resolve_model

    resolved = resolve_model(model, kind="clip")
    if Path(resolved).is_dir():
        return f"local-dir:{resolved}", None
    if resolved.startswith("hf-hub:"):
        return resolved, None
    arch, _, tag = resolved.partition("/")
    return arch, tag or None


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

    def similarity(self, images: Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """Cosine similarity in [-1, 1] of ``images[i]`` with ``texts[i]``, in one batch.

        Features are L2-normalized before the dot product, so scores are comparable across
        models (the paper's scripts compared raw features against a fixed constant).
        """
        import torch
        from PIL import Image

        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        if not images:
            return np.zeros(0, dtype=np.float32)
        pixels = torch.stack([self.preprocess(Image.fromarray(im)) for im in images]).to(self.device)
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode():
            img = torch.nn.functional.normalize(self.model.encode_image(pixels).float(), dim=-1)
            txt = torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)
        return (img * txt).sum(dim=-1).cpu().numpy()
