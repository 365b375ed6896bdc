"""Original-LLaVA checkpoints converted to llava-hf, checked against the source weights computed
independently (CLIP tower, projector and Llama run by hand, as LLaVA's own forward does)."""

import json

import numpy as np
import pytest
import torch

from genixer_ray.config import EngineConfig, SamplingConfig
from genixer_ray.convert_checkpoint import VICUNA_V1_SYSTEM, CheckpointLayoutError, convert_original_llava
from genixer_ray.engines.base import GenerationRequest, get_generator
from genixer_ray.tiny_models import IMAGE_SIZE, PATCH_SIZE, build_tokenizer

INSTRUCTION = "Write a question and its answer."


def make_original_llava(root, *, seed: int = 0):
    """A tiny checkpoint in the LLaVA repository's layout, and its separate CLIP vision tower.

    As LLaVA-1.5 saves it: a flat Llama config with the ``mm_*`` fields of ``llava_arch.py``,
    ``pytorch_model-*.bin`` shards with ``model.*``, ``model.mm_projector.{0,2}.*`` and
    ``lm_head.weight``, the frozen tower not saved (it is loaded from ``mm_vision_tower``).
    """
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tower_dir, src = root / "clip-vision", root / "llava-original"
    tower = CLIPVisionModel(CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
                                             image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=64))
    tower.save_pretrained(tower_dir)
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(tower_dir)
    tokenizer = build_tokenizer(seed)
    llama = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                        vocab_size=len(tokenizer), max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    lm = LlamaForCausalLM(llama)
    with torch.no_grad():
        lm.lm_head.weight.mul_(8.0)  # a peaked next-token distribution, so a mismatch shows
    state = dict(lm.state_dict())
    state |= {"model.mm_projector.0.weight": torch.randn(128, 64) * 0.1, "model.mm_projector.0.bias": torch.randn(128) * 0.1,
              "model.mm_projector.2.weight": torch.randn(128, 128) * 0.1, "model.mm_projector.2.bias": torch.randn(128) * 0.1}
    src.mkdir()
    torch.save(state, src / "pytorch_model-00001-of-00001.bin")
    (src / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {k: "pytorch_model-00001-of-00001.bin" for k in state}}))
    config = llama.to_dict() | {
        "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava", "torch_dtype": "float32",
        "mm_vision_tower": str(tower_dir), "mm_projector_type": "mlp2x_gelu", "mm_hidden_size": 64,
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad",
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "use_mm_proj": True,
        "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False, "tokenizer_padding_side": "right",
    }
    (src / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(src)
    return src, tower_dir, state


def reference_logprobs(src, tower_dir, state, image: np.ndarray) -> torch.Tensor:
    """Next-token log-probabilities of the source weights, computed as LLaVA-1.5 does.

    expand2square in the processor's mean colour, the CLIP tower's second-to-last layer without
    CLS, the 2-layer GELU projector, the image features spliced where ``<image>`` stands in the
    vicuna_v1 prompt (each text chunk tokenized on its own, as ``tokenizer_image_token`` does).
    """
    from PIL import Image
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    proc = CLIPImageProcessor.from_pretrained(tower_dir)
    pil = Image.fromarray(image)
    w, h = pil.size
    square = Image.new("RGB", (max(w, h),) * 2, tuple(int(x * 255) for x in proc.image_mean))
    square.paste(pil, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
    pixels = proc(images=square, return_tensors="pt")["pixel_values"]
    tower = CLIPVisionModel.from_pretrained(tower_dir).eval()
    cfg = json.loads((src / "config.json").read_text())
    lm = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg.items() if not k.startswith("mm_")})).eval()
    lm.load_state_dict({k: v for k, v in state.items() if not k.startswith("model.mm_projector.")})
    tok = AutoTokenizer.from_pretrained(src)
    prompt = f"{VICUNA_V1_SYSTEM} USER: <image>\n{INSTRUCTION} ASSISTANT:"
    before, after = prompt.split("<image>")
    ids_before = tok(before).input_ids
    ids_after = tok(after).input_ids[1:]  # the chunk's own BOS is dropped
    with torch.no_grad():
        feats = tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        feats = torch.nn.functional.linear(feats, state["model.mm_projector.0.weight"], state["model.mm_projector.0.bias"])
        feats = torch.nn.functional.linear(torch.nn.functional.gelu(feats), state["model.mm_projector.2.weight"], state["model.mm_projector.2.bias"])
        emb = lm.get_input_embeddings()
        embeds = torch.cat([emb(torch.tensor([ids_before])), feats, emb(torch.tensor([ids_after]))], dim=1)
        logits = lm(inputs_embeds=embeds).logits[0, -1]
    return torch.log_softmax(logits.float(), dim=-1)


def a_non_square_image() -> np.ndarray:
    # Half as tall as the model's input: padding to a square is exercised, resizing is not (so the
    # check measures the conversion, not two resampling implementations).
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(IMAGE_SIZE // 2, IMAGE_SIZE, 3), dtype=np.uint8)


def first_token_logprobs(model_dir: str, backend: str, ids: list[int], image: np.ndarray) -> torch.Tensor:
    gen = get_generator(EngineConfig(model=model_dir, backend=backend, dtype="float32", max_model_len=512))
    res = gen.next_token_logprobs([GenerationRequest(image, INSTRUCTION, SamplingConfig(temperature=0.0, max_tokens=1))], ids)[0]
    assert res.error_code is None, res.error
    row = res.top_logprobs[0]
    return torch.tensor([row[i] for i in ids])


def test_original_llava_converts_and_matches_the_source_weights(tmp_path):
    src, tower_dir, state = make_original_llava(tmp_path)
    dst = convert_original_llava(src, tmp_path / "llava-hf")
    config = json.loads((dst / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"] and config["vision_feature_layer"] == -2
    assert json.loads((dst / "processor_config.json").read_text()).get("image_token", "<image>") == "<image>"
    image = a_non_square_image()
    ref = reference_logprobs(src, tower_dir, state, image)
    got = first_token_logprobs(str(dst), "transformers", list(range(ref.shape[0])), image)  # the whole vocabulary
    assert torch.allclose(got, ref, atol=1e-3), (got - ref).abs().max()
    # The agreement is not trivial: the distribution is far from uniform, and the image moves it
    # (a wrong projector or tower would show).
    assert ref.max() - ref.median() > 3.0
    other = reference_logprobs(src, tower_dir, state, np.ascontiguousarray(image[:, ::-1]))
    assert (other - ref).abs().max() > 10 * 1e-3


def test_other_layouts_are_refused_naming_what_was_found(tmp_path, tiny_models):
    with pytest.raises(CheckpointLayoutError, match=r"architectures \['LlavaForConditionalGeneration'\].*already llava-hf"):
        convert_original_llava(tiny_models.generator, tmp_path / "out")
    src, _, _ = make_original_llava(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(cfg | {"mm_projector_type": "linear"}))
    with pytest.raises(CheckpointLayoutError, match="mm_projector_type 'linear'"):
        convert_original_llava(src, tmp_path / "out")
    with pytest.raises(CheckpointLayoutError, match="no config.json"):
        convert_original_llava(tmp_path / "nothing", tmp_path / "out")


@pytest.mark.vllm
def test_converted_checkpoint_loads_in_vllm_with_the_source_distribution(tmp_path):
    src, tower_dir, state = make_original_llava(tmp_path)
    dst = convert_original_llava(src, tmp_path / "llava-hf")
    image = a_non_square_image()
    ref = reference_logprobs(src, tower_dir, state, image)
    ids = ref.topk(128).indices.tolist()  # vLLM returns at most 128 requested ids: the likeliest
    got = first_token_logprobs(str(dst), "vllm", ids, image)
    assert torch.allclose(got, ref[ids], atol=1e-3), (got - ref[ids]).abs().max()
