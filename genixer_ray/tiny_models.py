"""Tiny models built locally from configs, for tests, CI and the embedded demo: nothing is downloaded.

``make_tiny_models(dir)`` writes, deterministically from a seed:

* ``dir/generator``: a LLaVA-1.5-architecture model (CLIP vision tower, MLP projector, Llama
  language model) with random weights, a byte-level BPE tokenizer trained here
  (:mod:`genixer_ray.tiny_tokenizer`) and a ``LlavaProcessor``. Weights are
  stored in the llava-hf layout (``vision_tower.vision_model.*``, ``language_model.model.*``) that
  both vLLM and transformers load, like any real llava-hf checkpoint.
* ``dir/clip``: an open_clip model directory (``open_clip_config.json``, safetensors weights, the
  same tokenizer with an end-of-text token appended) that open_clip opens with ``local-dir:``.

The sizes respect vLLM-CPU's limits (attention head_dim 64). Nothing here is used to *load*
models: the engines and filters load these directories exactly as they load real checkpoints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from genixer_ray.checkpoints import save_llava_hf
from genixer_ray.paths import build_once, genixer_home
from genixer_ray.tiny_tokenizer import CHAT_TEMPLATE, IMAGE_TOKEN, build_tokenizer

IMAGE_SIZE = 56
PATCH_SIZE = 14


@dataclass(frozen=True)
class TinyModelPaths:
    """Where :func:`make_tiny_models` wrote each model."""

    generator: Path
    clip: Path


# Architecture presets. "tiny" is what tests and the demo use. "30m" (about 30M parameters, a
# 224-pixel tower with 256 image tokens) is the CPU benchmarks' larger generator. "1b" and "7b"
# have real generators' shapes (CLIP ViT-L/14-336 tower, 576 image tokens; a 16-layer 2048-wide
# Llama, and LLaVA-1.5-7B's 32-layer 4096-wide Vicuna-7B) for throughput benchmarks on
# accelerators without downloading weights; their vocabulary stays the tiny one.
GENERATOR_SIZES = {
    "tiny": dict(
        image_size=IMAGE_SIZE, v_hidden=64, v_inter=128, v_layers=2, v_heads=1,
        # head_dim = 128 / 2 = 64: vLLM-CPU's attention kernels refuse smaller heads.
        t_hidden=128, t_inter=256, t_layers=2, t_heads=2,
    ),
    "30m": dict(
        image_size=224, v_hidden=256, v_inter=1024, v_layers=6, v_heads=4,
        t_hidden=512, t_inter=1376, t_layers=8, t_heads=8,
    ),
    "1b": dict(
        image_size=336, v_hidden=1024, v_inter=4096, v_layers=24, v_heads=16,
        t_hidden=2048, t_inter=5504, t_layers=16, t_heads=16,
    ),
    "7b": dict(
        image_size=336, v_hidden=1024, v_inter=4096, v_layers=24, v_heads=16,
        t_hidden=4096, t_inter=11008, t_layers=32, t_heads=32,
    ),
}


def _generator_config(z: dict, tokenizer):
    """The ``LlavaConfig`` of a size of :data:`GENERATOR_SIZES` with ``tokenizer``'s vocabulary."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    return LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=z["v_hidden"], intermediate_size=z["v_inter"], num_hidden_layers=z["v_layers"],
            num_attention_heads=z["v_heads"], image_size=z["image_size"], patch_size=PATCH_SIZE, projection_dim=64,
        ),
        text_config=LlamaConfig(
            hidden_size=z["t_hidden"], intermediate_size=z["t_inter"], num_hidden_layers=z["t_layers"],
            num_attention_heads=z["t_heads"], num_key_value_heads=z["t_heads"],
            vocab_size=len(tokenizer), max_position_embeddings=4096,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=(z["image_size"] // PATCH_SIZE) ** 2,
        projector_hidden_act="gelu",
    )


def _random_model(config, *, seed: int, small: bool):
    """The random-weight model of ``config``: in float32 when ``small``, else in bfloat16 where it is saved."""
    import torch
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(seed)
    if small:
        model = LlavaForConditionalGeneration(config).eval()
    else:
        # Built where and as it is saved: "7b" in float32 on a CPU would take 28 GB and minutes
        # of random initialization.
        before = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
                model = LlavaForConditionalGeneration(config).eval()
        finally:
            torch.set_default_dtype(before)
        config.dtype = "bfloat16"
    # Random init with std 0.02 gives near-uniform next-token distributions; a larger scale on
    # the output head makes sampling with different seeds visibly different in tests.
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model


def make_tiny_generator(out_dir: str | Path, *, seed: int = 0, size: str = "tiny") -> Path:
    """Write a random-weight LLaVA generator (model, tokenizer, processor) to ``out_dir``.

    Args:
        out_dir: created when missing.
        seed: drives tokenizer training and weight initialization.
        size: a key of :data:`GENERATOR_SIZES`; bigger sizes are built and saved in bfloat16, on
            the GPU when there is one.
    """
    from transformers import CLIPImageProcessor, LlavaProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(seed)
    z = GENERATOR_SIZES[size]
    save_llava_hf(_random_model(_generator_config(z, tokenizer), seed=seed, small=size == "tiny"), out)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": z["image_size"]},
        crop_size={"height": z["image_size"], "width": z["image_size"]},
        do_center_crop=True,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS position the vision tower adds
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )
    processor.save_pretrained(out)
    return out


def make_tiny_clip(out_dir: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny random-weight open_clip model directory (config, weights, tokenizer)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(seed, append_eos=True)
    tokenizer.save_pretrained(out)
    model_cfg = {
        "embed_dim": 64,
        "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": 64, "head_width": 32, "patch_size": PATCH_SIZE},
        "text_cfg": {
            "context_length": 32,
            "vocab_size": len(tokenizer),
            "width": 64,
            "heads": 2,
            "layers": 2,
            # A non-empty name makes open_clip use the HF tokenizer saved in this directory.
            "hf_tokenizer_name": "genixer-tiny-bpe",
            "pad_id": tokenizer.pad_token_id,
            "eos_id": tokenizer.eos_token_id,
            "pool_type": "eos",
        },
    }
    return _write_open_clip_dir(out, model_cfg, seed)


def make_random_clip(out_dir: str | Path, arch: str, *, seed: int = 0) -> Path:
    """Write an open_clip architecture (``ViT-L-14``) with random weights as a model directory.

    For benchmarks of a real CLIP's shape without a download: open_clip's own config of ``arch``
    and its bundled tokenizer; only architectures with open_clip's own text tower and tokenizer
    (others would fetch theirs from the Hugging Face hub).
    """
    import open_clip

    model_cfg = open_clip.get_model_config(arch)
    text = (model_cfg or {}).get("text_cfg", {})
    if model_cfg is None or model_cfg.get("custom_text") or "hf_model_name" in text or "hf_tokenizer_name" in text:
        raise ValueError(f"{arch!r} is not an open_clip architecture with its own text tower and tokenizer")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _write_open_clip_dir(out, model_cfg, seed)


def _write_open_clip_dir(out: Path, model_cfg: dict, seed: int) -> Path:
    import open_clip
    import torch
    from safetensors.torch import save_file

    preprocess_cfg = {
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    (out / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2, sort_keys=True)
    )
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"), metadata={"format": "pt"})
    return out


def make_tiny_models(out_dir: str | Path, *, seed: int = 0) -> TinyModelPaths:
    """Build both tiny models under ``out_dir`` (``generator/`` and ``clip/``); same seed, same files.

    Args:
        out_dir: parent directory; created when missing, existing files are overwritten.
        seed: drives tokenizer training and weight initialization.
    """
    out = Path(out_dir)
    return TinyModelPaths(
        generator=make_tiny_generator(out / "generator", seed=seed),
        clip=make_tiny_clip(out / "clip", seed=seed),
    )


# Bump when the tiny models' architecture or files change, so stale caches are not reused.
TINY_FORMAT = 4


def tiny_models_home() -> Path:
    """Where ``tiny`` model specs are built on first use (``$GENIXER_RAY_HOME`` or ~/.cache)."""
    return genixer_home() / f"tiny-models-v{TINY_FORMAT}"


def ensure_tiny_models(seed: int = 0) -> TinyModelPaths:
    """Build the tiny models once per machine (atomically, safe against concurrent builders)."""
    final = build_once(tiny_models_home() / f"seed{seed}", lambda tmp: make_tiny_models(tmp, seed=seed))
    return TinyModelPaths(generator=final / "generator", clip=final / "clip")
