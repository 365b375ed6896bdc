"""Model references: the one place a generator, judge or CLIP spec is checked and resolved.

A spec is ``tiny`` (the locally built tiny model of its kind), a local directory, or a hub id
(a generator's ``org/name``; for CLIP, open_clip's ``ARCH/TAG`` or ``hf-hub:org/repo``).
:func:`check_model_spec` runs when a config is validated (light: no model library imported);
:func:`resolve_model` runs where the model is loaded.
"""

from __future__ import annotations

from pathlib import Path

KINDS = ("generator", "clip")


def _is_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~"))


def check_model_spec(spec: str, *, kind: str = "generator") -> str:
    """Validate ``spec`` for a model of ``kind``; return it (a path made absolute, since Ray workers run elsewhere).

    Raises:
        ValueError: a path that is not a directory, or a CLIP architecture named without weights
            (open_clip would give it random weights; ``tiny`` is the only weightless CLIP accepted).
    """
    if _is_path(spec):
        p = Path(spec).expanduser()
        if not p.is_dir():
            raise ValueError(f"no model directory at {spec}")
        return str(p.resolve())
    if kind == "clip" and spec != "tiny" and not spec.startswith("hf-hub:") and "/" not in spec and not Path(spec).is_dir():
        raise ValueError(
            f"{spec!r} names a CLIP architecture without weights (open_clip would use random ones); "
            "give ARCH/TAG (e.g. ViT-B-32/laion2b_s34b_b79k), 'hf-hub:org/repo', a directory, or 'tiny'"
        )
    return spec


def resolve_model(spec: str, *, kind: str = "generator") -> str:
    """What the loaders take: ``tiny`` built (once) and given as its directory; a directory made
    absolute; anything else passed on as a hub id."""
    if kind not in KINDS:
        raise ValueError(f"model kind {kind!r}: expected one of {KINDS}")
    if spec == "tiny":
        from genixer_ray.tiny_models import ensure_tiny_models

        return str(getattr(ensure_tiny_models(), kind))
    p = Path(spec).expanduser()
    return str(p.resolve()) if p.is_dir() else spec


def input_side(spec: str) -> int | None:
    """The shorter image side a generator's image processor resizes to.

    Read from ``preprocessor_config.json`` (as llava-hf's checkpoints ship it) or the
    ``image_processor`` of ``processor_config.json`` (as transformers 5 saves a processor).
    ``None`` when it cannot be told here without loading anything: a hub id (nothing is
    downloaded for this), no processor config, or a processor without a fixed size (dynamic
    resolution). A fixed ``height``/``width`` resize needs both sides, so the larger counts.
    """
    import json

    if spec != "tiny" and not Path(spec).expanduser().is_dir():
        return None
    folder = Path(resolve_model(spec))
    size = None
    for name, key in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        try:
            config = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        size = ((config.get(key) or {}) if key else config).get("size")
        if size is not None:
            break
    if isinstance(size, int):
        return size
    if isinstance(size, dict) and "shortest_edge" in size:
        return int(size["shortest_edge"])
    if isinstance(size, dict) and {"height", "width"} <= set(size):
        return int(max(size["height"], size["width"]))
    return None
