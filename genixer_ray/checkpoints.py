"""Saving generator checkpoints in the llava-hf layout, which vLLM and transformers both load."""

from __future__ import annotations

from pathlib import Path

_LLAVA_HF_NAMES = (
    ("model.vision_tower.", "vision_tower.vision_model."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)


def llava_hf_key(key: str) -> str:
    """Map transformers' in-memory LLaVA weight names to the llava-hf checkpoint layout.

    transformers 5.x names the weights ``model.vision_tower.embeddings...``; vLLM 0.32 expects the
    layout of published llava-hf checkpoints (``vision_tower.vision_model.embeddings...``), which
    transformers also reads back.
    """
    for src, dst in _LLAVA_HF_NAMES:
        if key.startswith(src):
            return dst + key[len(src):]
    raise ValueError(f"unexpected LLaVA weight name {key!r}")


def save_llava_hf(model, out_dir: str | Path, *, processor=None, state: dict | None = None) -> Path:
    """Write ``model`` (config, generation config, safetensors weights) and ``processor`` to ``out_dir``.

    ``state`` replaces ``model.state_dict()`` where the weights are gathered elsewhere (FSDP).
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.config.architectures = [type(model).__name__]  # vLLM picks its model class by this
    model.config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    state = model.state_dict() if state is None else state
    tensors = {llava_hf_key(k): v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    if processor is not None:
        processor.save_pretrained(out)
    return out
