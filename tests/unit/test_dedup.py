"""Sample dedup (filters.dedup): near-duplicate samples of one image, the best kept."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from genixer_ray.config import DedupConfig, FiltersConfig
from genixer_ray.filters.decide import configured_rules, decide_shard
from genixer_ray.filters.dedup import _rank, decide_dedup

CFG = DedupConfig(enabled=True)


def sample(image: str, s: int, question: str, **fields) -> dict:
    return {"image_id": image, "sample": s, "status": "ok", "question": question, "parsed_task": "common_vqa"} | fields


def test_the_best_of_each_cluster_is_kept_and_the_others_name_it():
    rows = [
        sample("a", 0, "What color is the car?", judge_p_yes=0.6),
        sample("a", 1, "What colour is the car ?", judge_p_yes=0.9),  # the same question, better judged
        sample("a", 2, "Where is the dog?", parsed_task="rec", answer_boxes=[[0.1, 0.1, 0.5, 0.5]], judge_p_yes=0.8),
        sample("a", 3, "Where is the dog?", parsed_task="rec", answer_boxes=[[0.6, 0.6, 0.9, 0.9]], judge_p_yes=0.7),  # another dog
        sample("a", 4, "Where is the dog?", parsed_task="rec", answer_boxes=[[0.12, 0.1, 0.5, 0.52]], judge_p_yes=0.5),  # the same dog
        sample("a", 5, "Which is it? (A) tea (B) milk", answer_letter="A", judge_p_yes=0.4),
        sample("a", 6, "Which is it? (A) tea (B) milk", answer_letter="B", judge_p_yes=0.3),  # another answer
        sample("b", 0, "What color is the car?", judge_p_yes=0.1),  # another image: never its duplicate
        {"image_id": "a", "sample": 7, "status": "error", "error_code": "bad_box"},
    ]
    decide_dedup(rows, CFG)
    got = {(r["image_id"], r["sample"]): (r.get("dedup_pass"), r.get("duplicate_of")) for r in rows}
    assert got == {
        ("a", 0): (False, "a#1"), ("a", 1): (True, None), ("a", 2): (True, None), ("a", 3): (True, None),
        ("a", 4): (False, "a#2"), ("a", 5): (True, None), ("a", 6): (True, None), ("b", 0): (True, None), ("a", 7): (None, None),
    }


def test_in_the_commit_step_a_duplicate_is_rejected_counted_and_its_rule_recorded():
    cfg = FiltersConfig(judge={"enabled": False}, dedup={"enabled": True, "score": "clip_score"})
    rows = [sample("a", 0, "What is on the table?", clip_score=0.2), sample("a", 1, "What is on the table?", clip_score=0.3)]
    out, counts = decide_shard(rows, cfg)
    assert [r["keep"] for r in out] == [False, True] and out[0]["reject_reasons"] == ["duplicate_sample"]
    assert counts["funnel"]["common_vqa"] == {"rows": 2, "generated": 0, "parsed": 2, "dedup": 1, "kept": 1}
    assert [r.text for r in configured_rules(cfg) if r.filter == "dedup"] == ["best clip_score per question cluster (jaccard>=0.7)"]


def test_a_row_the_other_filters_rejected_is_not_kept_over_one_they_kept():
    rows = [sample("a", 0, "What is it?", judge_p_yes=0.99, clip_pass=False), sample("a", 1, "What is it?", judge_p_yes=0.2)]
    decide_dedup(rows, CFG)
    assert [r["dedup_pass"] for r in rows] == [False, True]


QUESTIONS = ["What color is the car?", "What colour is the car?", "Where is the dog?", "How many people are there?", "", "?"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(QUESTIONS), st.one_of(st.none(), st.floats(0, 1)), st.booleans()),
        min_size=1, max_size=24,
    ),
    st.randoms(use_true_random=False),
)
def test_one_best_per_cluster_whatever_the_order(specs, rnd):
    seen: dict[str, int] = {}
    rows = []
    for image, question, score, rejected in specs:
        seen[image] = seen.get(image, -1) + 1
        rows.append(sample(image, seen[image], question, judge_p_yes=score, judge_pass=not rejected))
    shuffled = [dict(r) for r in rows]
    rnd.shuffle(shuffled)
    decide_dedup(rows, CFG)
    decide_dedup(shuffled, CFG)
    decisions = {(r["image_id"], r["sample"]): (r["dedup_pass"], r["duplicate_of"]) for r in rows}
    assert decisions == {(r["image_id"], r["sample"]): (r["dedup_pass"], r["duplicate_of"]) for r in shuffled}
    by_id = {f"{r['image_id']}#{r['sample']}" if r["sample"] else r["image_id"]: r for r in rows}
    for r in rows:
        if not r["dedup_pass"]:
            best = by_id[r["duplicate_of"]]
            assert best["dedup_pass"] and best["image_id"] == r["image_id"]  # kept, of the same image
            assert _rank(best, CFG.score) <= _rank(r, CFG.score)  # and no worse


def test_hostile_questions_give_decisions_never_a_crash():
    rng = random.Random(0)
    hostile = ["", "\x00\x07\x1b[31m", "x" * 1_000_000, "🙂" * 5000, "".join(chr(rng.randrange(32, 0x2FFFF)) for _ in range(3000)),
               "<script>alert(1)</script> What is it?", None]
    rows = [sample("a", i, q) for i, q in enumerate(hostile)]
    decide_dedup(rows, CFG)
    assert all(r["dedup_pass"] in (True, False) for r in rows)


def test_the_dataset_card_says_what_dedup_removed():
    from genixer_ray.card import _dedup
    from genixer_ray.filters.rules import dedup_rule

    info = {"rules": [dedup_rule(CFG).as_dict()],
            "funnel": {"rec": {"parsed": 10, "judge": 8, "dedup": 5, "kept": 5}, "reg": {"parsed": 4, "dedup": 4, "kept": 4}}}
    assert "3 sample(s) rejected as `duplicate_sample`" in _dedup(info) and "best by `judge_p_yes`" in _dedup(info)
    assert _dedup({"rules": [], "funnel": {}}) == ("Near-duplicate images are generated on as often as they occur. "
                                                   "Near-duplicate samples are kept as generated.")
    saved = {"duplicate_images": 3, "clusters": 2, "by_tier": {"perceptual": 3}, "requests_avoided": 6}
    assert "3 image(s) left out as `duplicate_image`" in _dedup({"rules": [], "funnel": {}, "image_dedup": saved})
