"""Original-LLaVA checkpoints (the LLaVA repository's layout) -> llava-hf directories.

LLaVA-1.5 models trained with the LLaVA repository, the released Genixer-L generator among them,
are saved as ``LlavaLlamaForCausalLM``: a flat Llama config plus ``mm_*`` fields
(``mm_vision_tower``, ``mm_projector_type``, ``mm_vision_select_layer``, ...), weights named
``model.layers.*``, ``model.mm_projector.{0,2}.*``, ``lm_head.weight`` and, when the tower was
trained, ``model.vision_tower.vision_tower.*``; the frozen CLIP tower is usually not saved and is
loaded from ``mm_vision_tower``. vLLM and transformers read only the llava-hf layout, which this
module writes: ``LlavaForConditionalGeneration`` with a nested config, an ``<image>`` token, a
``LlavaProcessor`` that pads images to a square as ``image_aspect_ratio: pad`` does, and the
``vicuna_v1`` conversation LLaVA-1.5 (and Genixer-L) was trained with.

The key names and config fields follow the LLaVA repository's ``llava/model/llava_arch.py``,
``language_model/llava_llama.py``, ``multimodal_encoder/clip_encoder.py`` and
``multimodal_projector/builder.py`` (as vendored in the Genixer repository's ``Genixer_LLaVA``).
"""

from __future__ import annotations

import json
from pathlib import Path

from genixer_ray.checkpoints import llava_hf_key
from genixer_ray.errors import UserError
from genixer_ray.tiny_models import CHAT_TEMPLATE, IMAGE_TOKEN

# LLaVA's conv_vicuna_v1 (conv-mode vicuna_v1 / llava_v1): this system prompt, "USER: ",
# "ASSISTANT:", turns joined by a space. With no system message the template supplies it.
VICUNA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
VICUNA_V1_TEMPLATE = f"{{% if messages[0]['role'] != 'system' %}}{VICUNA_V1_SYSTEM} {{% endif %}}" + CHAT_TEMPLATE
_SELECT = {"patch": "default", "cls_patch": "full"}  # mm_vision_select_feature -> llava-hf strategy


class CheckpointLayoutError(UserError):
    """A checkpoint that is not in the original LLaVA layout (or uses a part llava-hf cannot hold)."""


def _source_state(src: Path) -> dict:
    """All tensors of a checkpoint saved with ``save_pretrained``: safetensors or ``.bin`` shards."""
    import torch
    from safetensors.torch import load_file

    files = sorted(src.glob("*.safetensors")) or sorted(src.glob("pytorch_model*.bin"))
    if not files:
        raise CheckpointLayoutError(f"{src}: no *.safetensors or pytorch_model*.bin weights")
    state: dict = {}
    for f in files:
        # weights_only: a .bin checkpoint is a pickle; only tensors and containers are admitted.
        state.update(load_file(str(f)) if f.suffix == ".safetensors" else torch.load(f, map_location="cpu", weights_only=True))
    return state


def read_original_config(src: Path) -> dict:
    """The source's config, checked to be the original LLaVA layout.

    Raises:
        CheckpointLayoutError: naming what was found instead.
    """
    path = src / "config.json"
    if not path.is_file():
        raise CheckpointLayoutError(f"{src}: no config.json")
    cfg = json.loads(path.read_text())
    archs = cfg.get("architectures") or []
    if "LlavaLlamaForCausalLM" not in archs or "mm_vision_tower" not in cfg:
        found = f"architectures {archs}, model_type {cfg.get('model_type')!r}, mm_vision_tower {'present' if 'mm_vision_tower' in cfg else 'absent'}"
        hint = " (already llava-hf: use it as generator.model directly)" if "LlavaForConditionalGeneration" in archs else ""
        raise CheckpointLayoutError(f"{src} is not an original-LLaVA checkpoint (LlavaLlamaForCausalLM with mm_vision_tower): {found}{hint}")
    projector = cfg.get("mm_projector_type", "linear")
    if projector != "mlp2x_gelu":
        raise CheckpointLayoutError(f"{src}: mm_projector_type {projector!r}; llava-hf holds only the 2-layer MLP ('mlp2x_gelu', LLaVA-1.5)")
    if cfg.get("mm_vision_select_feature", "patch") not in _SELECT:
        raise CheckpointLayoutError(f"{src}: mm_vision_select_feature {cfg['mm_vision_select_feature']!r} is not one of {sorted(_SELECT)}")
    if cfg.get("mm_use_im_start_end"):
        raise CheckpointLayoutError(f"{src}: mm_use_im_start_end=true (image start/end tokens) has no llava-hf equivalent")
    return cfg


def _llava_hf_weights(src: Path, state: dict, tower, tokenizer) -> dict:
    """The llava-hf state dict: the language model and projector renamed, the tower's weights,
    and rows for the tokens the tokenizer gained (at the mean of the old rows, as llava-hf's own
    conversion did)."""
    import torch

    out: dict = {}
    for k, v in state.items():
        if k.startswith("model.vision_tower."):
            continue
        if k.startswith("model.mm_projector."):
            layer, rest = k[len("model.mm_projector.") :].split(".", 1)
            out[f"multi_modal_projector.linear_{ {'0': 1, '2': 2}[layer] }.{rest}"] = v
        elif k.startswith("model."):
            out["language_model.model." + k[len("model.") :]] = v
        elif k == "lm_head.weight":
            out["language_model.lm_head.weight"] = v
        else:
            raise CheckpointLayoutError(f"{src}: unexpected weight {k!r} for an original-LLaVA checkpoint")
    for k, v in tower.state_dict().items():
        out[llava_hf_key("model.vision_tower." + k.removeprefix("vision_model."))] = v
    for k in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"):
        w = out[k]
        if w.shape[0] < len(tokenizer):
            out[k] = torch.cat([w, w.float().mean(0, keepdim=True).to(w.dtype).expand(len(tokenizer) - w.shape[0], -1)])
    return out


def _llava_hf_config(cfg: dict, tower, tokenizer):
    """The ``LlavaConfig`` of an original checkpoint's flat config, its tower and its tokenizer."""
    from transformers import LlamaConfig, LlavaConfig

    flat = {k: v for k, v in cfg.items() if not k.startswith(("mm_", "use_mm_", "tune_mm_", "freeze_mm_"))}
    for k in ("architectures", "model_type", "image_aspect_ratio", "image_grid_pinpoints", "transformers_version", "_name_or_path"):
        flat.pop(k, None)
    text_config = LlamaConfig(**flat | {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id})
    vc = tower.config
    config = LlavaConfig(
        vision_config=vc, text_config=text_config, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=cfg.get("mm_vision_select_layer", -2),
        vision_feature_select_strategy=_SELECT[cfg.get("mm_vision_select_feature", "patch")],
        image_seq_length=(vc.image_size // vc.patch_size) ** 2, projector_hidden_act="gelu",
    )
    config.architectures = ["LlavaForConditionalGeneration"]
    return config


def _save_processor(dst: Path, cfg: dict, config, tokenizer, clip_processor) -> None:
    """The llava-hf processor: CLIP's image settings (padded to a square as LLaVA-1.5 does), Vicuna's template."""
    from transformers import LlavaImageProcessor, LlavaProcessor

    image_processor = LlavaImageProcessor(
        do_pad=cfg.get("image_aspect_ratio") == "pad",  # LLaVA-1.5 pads to a square in the mean colour
        size=clip_processor.size, crop_size=clip_processor.crop_size, do_center_crop=clip_processor.do_center_crop,
        image_mean=clip_processor.image_mean, image_std=clip_processor.image_std, resample=clip_processor.resample,
    )
    LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,  # the CLS position of the CLIP tower
        chat_template=VICUNA_V1_TEMPLATE, image_token=IMAGE_TOKEN,
    ).save_pretrained(dst)


def convert_original_llava(src: str | Path, dst: str | Path, *, vision_tower: str | None = None) -> Path:
    """Write the llava-hf directory of an original-LLaVA checkpoint.

    Args:
        src: the original checkpoint's directory (config.json, weights, tokenizer).
        dst: the llava-hf directory to write (vLLM's and the transformers backend's ``engines.generator.model``).
        vision_tower: the CLIP vision model (a directory or hub id) when the checkpoint does not hold
            the tower's weights; default: the config's ``mm_vision_tower``.

    Raises:
        CheckpointLayoutError: the source is not in the original LLaVA layout.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionModel

    src, dst = Path(src), Path(dst)
    cfg = read_original_config(src)
    state = _source_state(src)
    tower_spec = vision_tower or cfg["mm_vision_tower"]
    tower = CLIPVisionModel.from_pretrained(tower_spec, dtype=torch.float32)
    tower_state = {k.removeprefix("model.vision_tower.vision_tower."): v for k, v in state.items() if k.startswith("model.vision_tower.vision_tower.")}
    if tower_state:  # a tower trained with the model: its weights are in the checkpoint
        tower.load_state_dict(tower_state)

    tokenizer = AutoTokenizer.from_pretrained(src)
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})

    weights = _llava_hf_weights(src, state, tower, tokenizer)
    config = _llava_hf_config(cfg, tower, tokenizer)
    dst.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(dst)
    dtype = getattr(torch, cfg.get("torch_dtype") or "float32") if isinstance(cfg.get("torch_dtype"), str) else torch.float32
    save_file({k: v.to(dtype).contiguous() for k, v in weights.items()}, str(dst / "model.safetensors"), metadata={"format": "pt"})
    _save_processor(dst, cfg, config, tokenizer, CLIPImageProcessor.from_pretrained(tower_spec))
    return dst
