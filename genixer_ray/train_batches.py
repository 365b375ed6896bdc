"""A training batch: the samples' images, read with their source's credentials and decoded once
per worker, and the processor's inputs with labels on the target tokens only."""

from __future__ import annotations

import functools
import json


@functools.lru_cache(maxsize=256)
def _load_image(url: str, max_side: int, options_json: str):
    # Small instruction sets revisit the same images every epoch: decode each once per worker.
    import fsspec
    from PIL import Image

    from genixer_ray.images import decode_image

    with fsspec.open(url, "rb", **json.loads(options_json)) as f:
        return Image.fromarray(decode_image(f.read(), max_side=max_side))


def image_options(sources) -> dict[str, str]:
    """``{image_root: storage options as JSON}`` of the training sources (their images' credentials)."""
    from genixer_ray.fixtures import resolve_fixture

    return {resolve_fixture(s.image_root).rstrip("/") + "/": json.dumps(s.storage_options, sort_keys=True) for s in sources}


def _options_for(url: str, options_by_root: dict[str, str]) -> str:
    # The longest image root the image lies under: nested roots each keep their own credentials.
    roots = [r for r in options_by_root if url.startswith(r)]
    return options_by_root[max(roots, key=len)] if roots else "{}"


def collate(processor, rows: list[dict], *, max_side: int, options_by_root: dict[str, str] | None = None):
    """Processor inputs and labels for a batch; labels are -100 except on the target tokens.

    The prompt is the model's chat template around the instruction (as at generation time);
    the target follows it and ends with the end-of-sequence token. Each image is read with the
    storage options of the source whose image root holds it (:func:`image_options`).
    """
    from genixer_ray.engines.base import chat_prompt

    images = [_load_image(r["image"], max_side, _options_for(r["image"], options_by_root or {})) for r in rows]
    prompts = [chat_prompt(processor, r["instruction"]) for r in rows]
    eos = processor.tokenizer.eos_token
    full = [f"{p} {r['target']}{eos}" for p, r in zip(prompts, rows)]
    processor.tokenizer.padding_side = "right"
    inputs = processor(images=images, text=full, padding=True, return_tensors="pt")
    prompt_only = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    labels = inputs["input_ids"].clone()
    labels[inputs["attention_mask"] == 0] = -100
    for i, n in enumerate(prompt_only["attention_mask"].sum(dim=1).tolist()):
        labels[i, :n] = -100  # the prompt (image tokens included) is context, not target
    inputs["labels"] = labels
    return inputs
