"""Prompt profiles: the exact instruction text each profile builds, in generation and in training."""

import json

import pytest

from genixer_ray.config import ConfigError, RunConfig, TrainConfig, build_config
from genixer_ray.instruct import build_instruction_set
from genixer_ray.prompts import GENERIC_INSTRUCTIONS, PROFILES, REC_QUESTIONS, choose_prompt, choose_prompts, referring_question
from genixer_ray.tasks import TASKS

OURS = PROFILES["genixer-ray"]
MIX = {t: 1.0 for t in TASKS}


def test_our_pool_is_large_and_distinct():
    assert len(GENERIC_INSTRUCTIONS) >= 50 and len(set(GENERIC_INSTRUCTIONS)) == len(GENERIC_INSTRUCTIONS)
    assert OURS.tasks == set(TASKS)


def test_choice_is_reproducible_from_seed_and_image_id():
    a = [choose_prompt(f"img{i}", seed=3, mode="specific", task_mix=MIX, profile=OURS) for i in range(200)]
    b = [choose_prompt(f"img{i}", seed=3, mode="specific", task_mix=MIX, profile=OURS) for i in range(200)]
    c = [choose_prompt(f"img{i}", seed=4, mode="specific", task_mix=MIX, profile=OURS) for i in range(200)]
    assert a == b and a != c
    assert {p.task for p in a} == set(TASKS)  # the mix reaches every task
    for p in a:
        assert p.instruction == f"{GENERIC_INSTRUCTIONS[int(p.template_id[1:])]} {TASKS[p.task].sentence}"


def test_agnostic_mode_has_no_task_sentence_and_mix_weights_apply():
    p = choose_prompt("x", seed=0, mode="agnostic", task_mix=MIX, profile=OURS)
    assert p.task is None and p.instruction in GENERIC_INSTRUCTIONS
    only = [choose_prompt(f"i{i}", seed=0, mode="specific", task_mix={"rec": 1.0, "reg": 0.0}, profile=OURS) for i in range(50)]
    assert {p.task for p in only} == {"rec"}


# The released generators' prompts, as their code builds them (Genixer repository:
# Genixer_LLaVA/model_genixer_eval.py; Genixer_Shikra/mllm/dataset/single_image_dataset/*.py).
GENIXER_L = {
    "common_vqa": "{g}\nThis is the Common VQA task.",
    "multi_choice_vqa": "{g}\nThis is a Multi-choice VQA task.",
    "adversarial_vqa": "{g}\nThis is an Adversarial-based VQA task.",
    "multi_turn_dialogue": "Design a conversation between you and a person asking about this photo. The answers should be in a "
    "tone that a visual AI assistant is seeing the image and answering the question. Ask diverse questions and give corresponding answers.",
}
GENIXER_S = {
    "rec": "{g} This is a Referring Expression Comprehension (REC) task. The question will give an expression of a specific "
    "region of the image. Please provide the coordinates in the answer.",
    "reg": "{g} This is a Referring Expression Generation (REG) task. The purpose of REG is to generate a unique description "
    "for a specified location.",
    "pointqa": "{g} This is a PointQA task.",
    "referential_dialogue": "{g} This is a Referential Dialogue task.",
    "q_ca": "{g} This is a QCA with box task.",
}


@pytest.mark.parametrize("profile,expected", [("genixer-l", GENIXER_L), ("genixer-s", GENIXER_S)])
def test_genixer_profiles_build_the_released_generators_prompts(tmp_path, profile, expected):
    # A generic pool in the shape of Genixer's GenQA_general_instructions.json ("<image> ..." strings).
    pool = ["<image> Ask one thing about the picture and answer it.", "<image> Write a question and its answer."]
    (tmp_path / "pool.json").write_text(json.dumps(pool))
    cfg = build_config(None, [f"prompts.profile={profile}", f"prompts.generic_pool={tmp_path / 'pool.json'}",
                              f"task_mix={json.dumps({t: 1 for t in expected})}"], kind=RunConfig)
    prof = cfg.prompts.build()
    assert prof.generic == ("Ask one thing about the picture and answer it.", "Write a question and its answer.")
    seen = set()
    for i in range(80):
        c = choose_prompt(f"img{i}", seed=1, mode="specific", task_mix=cfg.task_mix, profile=prof)
        g = prof.generic[int(c.template_id[1:])] if c.template_id != "fixed" else None
        assert c.instruction == expected[c.task].format(g=g)
        assert (c.template_id == "fixed") == (c.task == "multi_turn_dialogue")
        seen.add(c.task)
    assert seen == set(expected)
    agnostic = choose_prompt("img0", seed=1, mode="agnostic", task_mix=cfg.task_mix, profile=prof)
    assert agnostic.instruction in prof.generic  # task-agnostic: the generic instruction alone


def test_profile_refuses_tasks_it_cannot_name_and_bad_pools(tmp_path):
    with pytest.raises(ConfigError, match=r"task_mix: prompt profile 'genixer-s' has no task sentence for \['common_vqa'"):
        build_config(None, ["prompts.profile=genixer-s", "task_mix={common_vqa: 1, rec: 1}"], kind=RunConfig)
    (tmp_path / "rec.json").write_text(json.dumps(["Where is it?"]))
    with pytest.raises(ConfigError, match=r"prompts.rec_questions: every phrasing must contain <expr>"):
        build_config(None, [f"prompts.rec_questions={tmp_path / 'rec.json'}"], kind=TrainConfig)
    with pytest.raises(ConfigError, match=r"prompts.generic_pool: cannot read"):
        build_config(None, [f"prompts.generic_pool={tmp_path / 'missing.json'}"], kind=RunConfig)


def test_training_uses_the_profile_and_its_phrasing_pools(tmp_path):
    rec_pool = ["Find <expr>.", "Box <expr>, please."]
    (tmp_path / "rec.json").write_text(json.dumps(rec_pool))
    cfg = build_config(None, ["prompts.profile=genixer-s", f"prompts.rec_questions={tmp_path / 'rec.json'}"], kind=TrainConfig)
    prof = cfg.prompts.build()
    samples = [
        {"sample_id": f"s{i}", "image": "x", "task": "rec", "turns": [], "referring": {"expression": "the cat", "region": "[0.1,0.2,0.3,0.4]"}}
        for i in range(40)
    ] + [{"sample_id": "v", "image": "x", "task": "common_vqa", "turns": [("What is it?", "a cat")]}]
    rows = list(build_instruction_set(iter(samples), seed=0, specific_share=1.0, task_weights={}, profile=prof))
    targets = {r["target"] for r in rows if r["task"] == "rec"}
    assert targets == {"Question: Find the cat. Answer: [0.1,0.2,0.3,0.4]", "Question: Box the cat, please. Answer: [0.1,0.2,0.3,0.4]"}
    for r in rows:
        assert r["prompt_profile"] == "genixer-s"
        if r["task"] == "rec":
            g = prof.generic[int(r["template_id"].split("+")[0][1:])]
            assert r["instruction"] == GENIXER_S["rec"].format(g=g) and r["mode"] == "specific"
            assert r["template_id"].split("+")[1] in ("rec00", "rec01")
    # Genixer-S names no Common VQA sentence: that sample trains task-agnostic only.
    vqa = next(r for r in rows if r["task"] == "common_vqa")
    assert vqa["mode"] == "agnostic" and vqa["instruction"] in prof.generic


def test_referring_question_uses_the_pools_placeholders():
    import random

    q, a, k = referring_question(OURS, "rec", {"expression": "the dog", "region": "[0.1,0.1,0.2,0.2]"}, random.Random(0))
    assert a == "[0.1,0.1,0.2,0.2]" and "the dog" in q and q == REC_QUESTIONS[int(k[3:])].replace("<expr>", "the dog")
    q, a, _ = referring_question(OURS, "reg", {"expression": "the dog", "region": "[0.1,0.1,0.2,0.2]"}, random.Random(0))
    assert a == "the dog" and "[0.1,0.1,0.2,0.2]" in q


def test_an_images_samples_take_different_tasks_until_every_task_is_taken():
    mix = {"rec": 1.0, "reg": 5.0, "pointqa": 1.0, "q_ca": 0.0}
    for i in range(30):
        ps = choose_prompts(f"img{i}", 7, seed=2, mode="specific", task_mix=mix, profile=OURS)
        assert ps[0] == choose_prompt(f"img{i}", seed=2, mode="specific", task_mix=mix, profile=OURS)  # sample 0: the one-sample choice
        tasks = [p.task for p in ps]
        assert sorted(tasks[:3]) == sorted(tasks[3:6]) == ["pointqa", "rec", "reg"]  # rounds over the weighted tasks, none at 0
        assert ps == choose_prompts(f"img{i}", 7, seed=2, mode="specific", task_mix=mix, profile=OURS)
    agnostic = choose_prompts("x", 3, seed=0, mode="agnostic", task_mix=mix, profile=OURS)
    assert {p.task for p in agnostic} == {None} and len({p.instruction for p in agnostic}) > 1
