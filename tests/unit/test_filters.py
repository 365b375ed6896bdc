"""Filter stages on the real tiny models (transformers backend, open_clip), without Ray."""

import math

import numpy as np
import pytest

from genixer_ray.config import load_config
from genixer_ray.engines.base import GenerationRequest
from genixer_ray.filters.clip import ClipScorer, ClipStage, crop_box, region_texts
from genixer_ray.filters.consistency import ConsistencyStage, reask_instruction
from genixer_ray.filters.decide import decide, funnel
from genixer_ray.filters.judge import JudgeStage, judged_text, yes_no_token_ids
from genixer_ray.schema import to_frame
from genixer_ray.stages import drop_image


@pytest.fixture(scope="module")
def cfg(tiny_models):
    return load_config(None, [
        "engines.generator.backend=transformers", "engines.generator.dtype=float32",
        "filters.clip.enabled=true", "filters.clip.min_box_side=0.05", "filters.clip.threshold=-1",
        "filters.judge.enabled=true", "filters.consistency.enabled=true",
        "filters.consistency.samples=2", "filters.consistency.temperature=0", "filters.consistency.max_tokens=8",
    ])


@pytest.fixture(scope="module")
def generator(cfg):
    from genixer_ray.engines.base import get_generator

    return get_generator(cfg.engines.generator)


def test_clip_crops_boxes_rejects_bad_ones_and_scores_the_rest(cfg, embedded_images, make_row):
    img = embedded_images["astronaut"]
    rows = [
        make_row(img, "outside", parsed_task="rec", question="Where is the helmet?", answer="[1.2,0.1,1.5,0.4]",
                 answer_boxes=[[1.2, 0.1, 1.5, 0.4]]),
        make_row(img, "tiny-box", parsed_task="rec", question="Where is the star?", answer="[0.10,0.10,0.12,0.40]",
                 answer_boxes=[[0.10, 0.10, 0.12, 0.40]]),
        make_row(img, "rec", parsed_task="rec", question="Where is the helmet?", answer="[0.2,0.0,0.8,0.5]",
                 answer_boxes=[[0.2, 0.0, 0.8, 0.5]]),
        make_row(img, "reg", parsed_task="reg", question="What is in [0.0,0.5,0.5,1.0]?", answer="a suit",
                 question_boxes=[[0.0, 0.5, 0.5, 1.0]]),
        make_row(img, "generic", parsed_task="common_vqa", question="What is the man wearing?", answer="a space suit"),
        {"shard": 0, "image_id": "failed", "status": "error", "error_code": "not_an_image", "error_stage": "decode"},
    ]
    out = ClipStage(cfg.filters.clip)(rows)
    by_id = {r["image_id"]: r for r in out}
    assert by_id["outside"]["clip_reason"] == "box_outside_image" and by_id["outside"]["clip_score"] is None
    assert by_id["tiny-box"]["clip_reason"] == "box_too_small"
    assert by_id["failed"] == rows[-1]

    # The scores are the tiny CLIP's cosine of exactly these crops and texts.
    scorer = ClipScorer("tiny")
    h, w = img.shape[:2]
    expected = scorer.similarity(
        [img[0 : h // 2, int(0.2 * w) : int(np.ceil(0.8 * w))], img[h // 2 :, : w // 2], img],
        ["Where is the helmet?", "a suit", "What is the man wearing? a space suit"],
    )
    got = [by_id[k]["clip_score"] for k in ("rec", "reg", "generic")]
    assert got == pytest.approx(expected.tolist(), abs=1e-5)
    assert all(-1 <= s <= 1 for s in got)

    decided = {r["image_id"]: r for r in decide(out, cfg.filters.model_copy(update={"clip": cfg.filters.clip.model_copy(
        update={"task_thresholds": {"reg": 1.0}})}))}
    assert decided["outside"]["reject_reasons"] == ["box_outside_image"] and decided["outside"]["keep"] is False
    assert decided["tiny-box"]["reject_reasons"] == ["box_too_small"]
    assert decided["reg"]["reject_reasons"] == ["clip_below_threshold"] and decided["reg"]["clip_threshold"] == 1.0
    assert decided["rec"]["keep"] is True and decided["rec"]["clip_threshold"] == -1.0
    assert decided["failed"]["reject_reasons"] == ["not_an_image"] and decided["failed"]["keep"] is False


def test_region_texts_pair_each_box_with_its_words():
    row = {"question": "Why is he happy?", "answer": "The dog [0.1,0.1,0.3,0.3] chases the ball [0.5,0.5,0.6,0.6].",
           "answer_boxes": [[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.6, 0.6]], "question_boxes": []}
    assert [t for _, t in region_texts(row)] == ["The dog", "chases the ball"]
    only_box = {"question": "Where is the red bus?", "answer": "[0.1,0.1,0.3,0.3]", "answer_boxes": [[0.1, 0.1, 0.3, 0.3]]}
    assert region_texts(only_box) == [([0.1, 0.1, 0.3, 0.3], "Where is the red bus?")]
    assert crop_box(np.zeros((10, 10, 3), np.uint8), [0.5, 0.5, 0.4, 0.9], 0.0) == "box_outside_image"


def test_judge_p_yes_matches_an_independent_forward_pass(cfg, generator, embedded_images, make_row, reference_p_yes):
    yes, no = yes_no_token_ids(generator.processor.tokenizer)
    words = {generator.processor.tokenizer.decode([t]) for t in yes + no}
    assert {"Yes", " Yes", "No", " No"} <= words
    imgs = [embedded_images[k] for k in ("astronaut", "coffee", "rocket")]
    rows = [make_row(im, f"r{i}", parsed_task="common_vqa", question=f"What is item {i}?", answer="a cup") for i, im in enumerate(imgs)]
    rows.append(make_row(imgs[0], "md", parsed_task="multi_turn_dialogue",
                         turns=[{"question": "Who?", "answer": "a man"}, {"question": "Where?", "answer": "space"}]))
    out = JudgeStage(cfg.filters.judge, generator)(rows)
    assert judged_text(rows[-1]) == "Question: Who? Answer: a man Question: Where? Answer: space"
    for r in out:
        want = reference_p_yes(generator, np.frombuffer(r["pixels"], np.uint8).reshape(r["height"], r["width"], 3),
                                 cfg.filters.judge.prompt.format(qa=judged_text(r)))
        assert r["judge_p_yes"] == pytest.approx(want, abs=1e-4)
        assert 0 < r["judge_p_yes"] < 1 and r["judge_reason"] is None
    again = JudgeStage(cfg.filters.judge, generator)(rows)
    assert [r["judge_p_yes"] for r in again] == [r["judge_p_yes"] for r in out]  # deterministic: nothing is sampled


def test_self_consistency_exact_match_and_invalid_option(cfg, generator, embedded_images, make_row):
    from genixer_ray.config import SamplingConfig
    from genixer_ray.engines.base import GenerationRequest

    img = embedded_images["chelsea"]
    base = make_row(img, "vqa", parsed_task="common_vqa", question="What animal is this?", answer="placeholder")
    greedy = generator.generate([GenerationRequest(img, reask_instruction(base), SamplingConfig(temperature=0, max_tokens=8))])[0].text
    assert greedy.strip()
    rows = [
        base | {"image_id": "same", "answer": greedy},
        base | {"image_id": "other", "answer": "zzz qqq"},
        make_row(img, "mc", parsed_task="multi_choice_vqa", question="Which? (A) cat (B) dog (C) cow (D) hen",
                 answer="(E) purple", options=["(A) cat", "(B) dog", "(C) cow", "(D) hen"]),
        make_row(img, "dialogue", parsed_task="multi_turn_dialogue"),
    ]
    out = {r["image_id"]: r for r in ConsistencyStage(cfg.filters.consistency, generator)(rows)}
    assert out["same"]["consistency_score"] == 1.0 and out["same"]["consistency_answers"] == [greedy, greedy]
    assert out["other"]["consistency_score"] < 1.0
    assert out["mc"]["consistency_reason"] == "answer_not_in_options" and out["mc"]["consistency_score"] == 0.0
    assert out["dialogue"].get("consistency_score") is None
    decided = {r["image_id"]: r for r in decide(list(out.values()), cfg.filters)}
    assert decided["same"]["consistency_pass"] is True and decided["mc"]["reject_reasons"] == ["answer_not_in_options"]
    assert decided["dialogue"].get("consistency_pass") is None and decided["dialogue"]["keep"] is True


def test_band_policy_keeps_exactly_rows_in_band_and_funnel_counts(cfg):
    scores = [0.2, 0.5, 0.65, 0.7, 0.9, math.nan]
    rows = [{"shard": 0, "image_id": f"r{i}", "status": "ok", "text": "t", "parsed_task": "common_vqa", "judge_p_yes": s,
             "judge_reason": None} for i, s in enumerate(scores)]
    rows.append({"shard": 0, "image_id": "bad", "status": "error", "error_code": "bad_box", "text": "t", "task": "rec"})
    rows.append({"shard": 0, "image_id": "long", "status": "error", "error_code": "prompt_too_long", "error_stage": "generate",
                 "text": "", "task": "rec"})
    judge_only = cfg.filters.model_copy(update={
        "clip": cfg.filters.clip.model_copy(update={"enabled": False}),
        "consistency": cfg.filters.consistency.model_copy(update={"enabled": False}),
    })
    out = decide(rows, judge_only)
    assert [r["keep"] for r in out] == [False, True, True, True, False, False, False, False]
    assert out[0]["reject_reasons"] == ["judge_outside_band"] and out[1]["judge_rule"] == "band[0.5,0.7]"
    assert funnel(out, judge_only) == {
        "common_vqa": {"rows": 6, "generated": 6, "parsed": 6, "judge": 3, "kept": 3},
        # Every step for every task, zeros included: the over-long prompt generated nothing.
        "rec": {"rows": 2, "generated": 1, "parsed": 0, "judge": 0, "kept": 0},
    }
    top = decide(rows, judge_only.model_copy(update={"judge": judge_only.judge.model_copy(update={"policy": "top_fraction", "fraction": 0.4})}))
    assert [r["image_id"] for r in top if r["keep"]] == ["r3", "r4"]  # ceil(0.4 * 5 scored) = 2 best
    to_frame(drop_image(out))  # every decision fits the output schema


def test_clip_raw_score_is_the_papers_dot_product_and_its_50_pixel_rule(cfg, embedded_images, make_row):
    import torch
    from PIL import Image

    img = embedded_images["astronaut"]  # decoded at 448 x 448; the original is 512 x 512
    raw_cfg = cfg.filters.clip.model_copy(update={"score": "raw", "threshold": 0.0, "min_box_pixels": 50, "min_box_side": 0.0})
    rows = [
        make_row(img, "rec", parsed_task="rec", question="Where is the helmet?", answer="[0.2,0.0,0.8,0.5]",
                 answer_boxes=[[0.2, 0.0, 0.8, 0.5]], image_width=512, image_height=512),
        # 0.09 of 512 is 46 pixels (int(0.19 * 512) - int(0.10 * 512) = 97 - 51): under the paper's 50.
        make_row(img, "small", parsed_task="rec", question="Where is the star?", answer="[0.10,0.10,0.19,0.40]",
                 answer_boxes=[[0.10, 0.10, 0.19, 0.40]], image_width=512, image_height=512),
    ]
    out = {r["image_id"]: r for r in ClipStage(raw_cfg)(rows)}
    assert out["small"]["clip_reason"] == "box_too_small" and out["small"]["clip_raw_score"] is None
    # The dot product of open_clip's unnormalized features, computed here without the stage.
    scorer = ClipScorer("tiny")
    h, w = img.shape[:2]
    crop = img[0 : h // 2, int(0.2 * w) : int(np.ceil(0.8 * w))]
    with torch.no_grad():
        f_img = scorer.model.encode_image(scorer.preprocess(Image.fromarray(crop))[None]).float()
        f_txt = scorer.model.encode_text(scorer.tokenizer(["Where is the helmet?"])).float()
    assert out["rec"]["clip_raw_score"] == pytest.approx(float((f_img * f_txt).sum()), rel=1e-4)
    assert out["rec"]["clip_score"] == pytest.approx(float(torch.nn.functional.cosine_similarity(f_img, f_txt)), abs=1e-5)
    # The threshold applies to the raw score when score=raw.
    decided = {r["image_id"]: r for r in decide(list(out.values()), cfg.filters.model_copy(update={
        "clip": raw_cfg.model_copy(update={"threshold": out["rec"]["clip_raw_score"] + 1.0}),
        "judge": cfg.filters.judge.model_copy(update={"enabled": False}),
        "consistency": cfg.filters.consistency.model_copy(update={"enabled": False})}))}
    assert decided["rec"]["reject_reasons"] == ["clip_below_threshold"] and decided["small"]["reject_reasons"] == ["box_too_small"]


def test_sampled_probability_under_top_k_then_top_p():
    from genixer_ray.filters.judge import paper_score, sampled_probability

    # Raw probabilities 0.5, 0.3, 0.1, 0.05, ... top_k=3 keeps 0.5, 0.3, 0.1 (mass 0.9), renormalized
    # 0.556, 0.333, 0.111; top_p=0.8 keeps the prefix reaching 0.8 of that: the first two.
    top = {1: math.log(0.5), 2: math.log(0.3), 3: math.log(0.1), 4: math.log(0.05)}
    assert sampled_probability(1, top, top_k=3, top_p=0.8) == pytest.approx(0.5 / 0.8)
    assert sampled_probability(2, top, top_k=3, top_p=0.8) == pytest.approx(0.3 / 0.8)
    assert sampled_probability(3, top, top_k=3, top_p=0.95) == pytest.approx(0.1 / 0.9)
    # The script's mean: the product of all n probabilities to the power 1 / (n - 1).
    assert paper_score([1, 2], [top, top], top_k=3, top_p=0.8) == pytest.approx((0.625 * 0.375) ** 1.0)
    assert paper_score([1], [top], top_k=3, top_p=0.8) == pytest.approx(0.625)


def test_paper_judge_score_matches_an_independent_computation(cfg, generator, embedded_images, make_row):
    """The sampled reply's probabilities recomputed with a plain forward pass and transformers' own
    top-k and top-p warpers, then the script's mean."""
    import torch
    from PIL import Image
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    from genixer_ray.filters.judge import PAPER_PROMPT

    judge_cfg = cfg.filters.judge.model_copy(update={"paper_score": True})
    rows = [make_row(embedded_images[k], k, parsed_task="common_vqa", question="What is shown?", answer="a photo", seed=i)
            for i, k in enumerate(("astronaut", "coffee", "rocket"))]
    out = JudgeStage(judge_cfg, generator)(rows)
    proc, model = generator.processor, generator.model
    for r in out:
        assert 0 < r["judge_paper_score"] <= 1 and isinstance(r["judge_paper_reply"], str)
        image = np.frombuffer(r["pixels"], np.uint8).reshape(r["height"], r["width"], 3)
        inputs = proc(images=[Image.fromarray(image)], text=[generator.format_prompt(PAPER_PROMPT.format(qa=judged_text(r)))],
                      return_tensors="pt")
        reply = generator.generate([GenerationRequest(image, PAPER_PROMPT.format(qa=judged_text(r)), JudgeStage._paper_sampling(r))])[0]
        assert reply.text == r["judge_paper_reply"]
        reply = reply.token_ids
        ids = torch.cat([inputs["input_ids"], torch.tensor([reply])], dim=1)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=inputs["pixel_values"]).logits[0].float()
        start = inputs["input_ids"].shape[1] - 1
        probs = []
        for j, tok in enumerate(reply):
            step = logits[start + j][None]
            step = TopPLogitsWarper(0.95)(ids, TopKLogitsWarper(10)(ids, step))
            probs.append(torch.softmax(step, dim=-1)[0, tok].item())
        want = math.prod(probs) ** (1 / (len(probs) - 1)) if len(probs) > 1 else probs[0]
        assert r["judge_paper_score"] == pytest.approx(want, rel=1e-3)
    again = JudgeStage(judge_cfg, generator)(rows)
    assert [r["judge_paper_reply"] for r in again] == [r["judge_paper_reply"] for r in out]  # seeded per row
