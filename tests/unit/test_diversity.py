"""Diversity figures per task, by hand-checked examples and properties; no Ray."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from genixer_ray.diversity import question_clusters, run_diversity, task_diversity
from genixer_ray.schema import to_frame


def test_figures_of_a_small_task_by_hand():
    questions = ["What color is the car?", "What colour is the car?", "What color is the bus?", "How many dogs are there?"]
    d = task_diversity(questions, ["red", "dark red", "blue", "two"], [None, None, [[0.0, 0.0, 0.5, 0.5]], [[0.0, 0.0, 1.0, 0.5]]])
    assert d["samples"] == 4 and d["unique_questions"] == 4
    words = [q.lower().replace("?", "").split() for q in questions]
    assert d["distinct_1"] == round(len({w for ws in words for w in ws}) / sum(map(len, words)), 4)
    # The three colour questions are one cluster (a spelling variant and one word changed), the count another.
    assert d["question_clusters"] == 2 and d["largest_clusters"][0] == {"size": 3, "example": "What color is the car?"}
    assert d["top20_cluster_share"] == 1.0
    assert math.isclose(d["opening_entropy_bits"], -(0.5 * math.log2(0.5) + 2 * 0.25 * math.log2(0.25)), abs_tol=1e-4)
    assert d["answer_words"] == {"mean": 1.25, "p50": 1.0, "p90": 1.7} and d["answer_box_area"]["mean"] == 0.375


def test_a_runs_rows_are_measured_per_parsed_task_ok_rows_only():
    rows = [{"shard": 0, "image_id": f"i{k}", "sample": 0, "status": "ok", "parsed_task": t, "question": q, "answer": "a"}
            for k, (t, q) in enumerate([("common_vqa", "What is it?"), ("common_vqa", "Why?"), ("rec", "Where is the cat?")])]
    rows.append({"shard": 0, "image_id": "bad", "sample": 0, "status": "error", "error_code": "empty_field", "parsed_task": None})
    out = run_diversity(to_frame(rows).select(["status", "parsed_task", "question", "answer", "answer_boxes"]))
    assert set(out) == {"common_vqa", "rec"} and out["common_vqa"]["samples"] == 2 and out["rec"]["answer_box_area"] is None


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(max_size=300), min_size=1, max_size=30))
def test_hostile_text_gives_figures_never_a_crash(texts):
    """Empty strings, control characters and every script: one label per question, figures in range."""
    from genixer_ray.decontam.index import normalize_text

    labels = question_clusters([normalize_text(t) for t in texts])
    assert len(labels) == len(texts) and all(labels[label] == label for label in labels)  # a label is its cluster's first member
    d = task_diversity(texts, texts, [None] * len(texts))
    assert d["samples"] == len(texts) and 0 < d["top20_cluster_share"] <= 1 and d["opening_entropy_bits"] >= 0


def test_a_megabyte_question_is_measured():
    d = task_diversity(["x" * 1_000_000, "What is it?"], ["a", "b"], [None, None])
    assert d["unique_questions"] == 2 and d["question_clusters"] == 2 and 0 < d["distinct_1"] <= 1
