import hashlib

import numpy as np
import pytest

from genixer_ray.tiny_models import IMAGE_TOKEN, make_tiny_models


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return make_tiny_models(root / "a", seed=0), make_tiny_models(root / "b", seed=0), make_tiny_models(root / "c", seed=1)


def test_same_seed_same_files(two_builds):
    a, b, c = two_builds
    for rel in ("generator/model.safetensors", "generator/tokenizer.json", "clip/open_clip_model.safetensors", "clip/tokenizer.json"):
        pa, pb, pc = (p.generator.parent / rel for p in (a, b, c))
        assert digest(pa) == digest(pb), rel
    assert digest(a.generator / "model.safetensors") != digest(c.generator / "model.safetensors")


def test_generator_layout_is_llava_hf(two_builds):
    from safetensors import safe_open

    with safe_open(str(two_builds[0].generator / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert any(k.startswith("vision_tower.vision_model.embeddings.") for k in keys)
    assert "language_model.lm_head.weight" in keys
    assert any(k.startswith("language_model.model.layers.") for k in keys)
    assert any(k.startswith("multi_modal_projector.") for k in keys)


def test_transformers_loads_processor_and_weights(tiny_models):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(tiny_models.generator)
    saved = load_file(str(tiny_models.generator / "model.safetensors"))
    # The llava-hf names map back onto the model: no weight was left at its random init.
    assert torch.equal(model.lm_head.weight, saved["language_model.lm_head.weight"])
    assert torch.equal(
        model.model.vision_tower.embeddings.patch_embedding.weight,
        saved["vision_tower.vision_model.embeddings.patch_embedding.weight"],
    )
    proc = AutoProcessor.from_pretrained(tiny_models.generator)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Ask."}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == f"USER: {IMAGE_TOKEN}\nAsk. ASSISTANT:"
    from PIL import Image

    enc = proc(images=[Image.new("RGB", (90, 60))], text=[text], return_tensors="pt")
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == model.config.image_seq_length
    assert enc["input_ids"][0, 0] == proc.tokenizer.bos_token_id


def test_tokenizer_round_trips_any_text(tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models.generator)
    s = "Question: Where is the cat? Answer: [0.120,0.300,0.455,0.910] ünïcødé ✓"
    assert tok.decode(tok(s, add_special_tokens=False)["input_ids"]) == s
    assert tok.unk_token_id not in tok(s)["input_ids"]


def test_clip_loads_through_open_clip_and_scores(tiny_models, embedded_images):
    from genixer_ray.filters.clip import ClipScorer, open_clip_spec

    assert open_clip_spec("tiny") == (f"local-dir:{tiny_models.clip}", None)
    assert open_clip_spec(str(tiny_models.clip))[0].startswith("local-dir:")
    assert open_clip_spec("ViT-B-32/openai") == ("ViT-B-32", "openai")
    scorer = ClipScorer("tiny")
    imgs = list(embedded_images.values())[:3]
    s = scorer.similarity(imgs, ["a cat", "a rocket", "a cup of coffee"])
    assert s.shape == (3,) and np.all(np.abs(s) <= 1.0 + 1e-5)
    # The text changes the score: the text tower is really used.
    assert scorer.similarity(imgs[:1], ["a cat"])[0] != pytest.approx(scorer.similarity(imgs[:1], ["a galaxy far away"])[0])
    # Scores do not depend on the batch they are computed in.
    assert scorer.similarity(imgs[1:2], ["a rocket"])[0] == pytest.approx(s[1], abs=1e-5)


def test_random_clip_of_a_real_architecture_is_a_model_directory(tmp_path):
    """Benchmarks take a real CLIP's shape without a download: open_clip's own config of the
    architecture, random weights, a directory a run's config accepts; other names are refused."""
    import open_clip

    from genixer_ray.config import ClipFilterConfig
    from genixer_ray.filters.clip import ClipScorer
    from genixer_ray.tiny_models import make_random_clip

    out = make_random_clip(tmp_path / "clip", "ViT-S-32")
    scorer = ClipScorer(ClipFilterConfig(enabled=True, model=str(out)).model, device="cpu")
    assert scorer.model.visual.transformer.width == open_clip.get_model_config("ViT-S-32")["vision_cfg"]["width"]
    cosine, _ = scorer.scores([np.zeros((40, 60, 3), np.uint8)], ["a dog"])
    assert np.isfinite(cosine).all()
    for name in ("ViT-Nope-99", "ViT-B-16-SigLIP"):  # unknown; a Hugging Face text tower
        with pytest.raises(ValueError, match="open_clip architecture"):
            make_random_clip(tmp_path / name, name)
