"""Diversity figures per task, by hand-checked examples and properties; no Ray."""

import math

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from genixer_ray.diversity import run_diversity, task_diversity
from genixer_ray.question_clusters import cluster_frame, gram_tokens, jaccard, shingles, with_refs
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
    """Empty strings, control characters and every script: every question in one cluster, named by
    one of its own nodes; figures in range."""
    nodes = cluster_frame(with_refs(pl.DataFrame({"status": "ok", "parsed_task": "t", "question": texts})))
    assert nodes["count"].sum() == len(texts) and set(nodes["cluster"].to_list()) <= set(nodes["node"].to_list())
    reps = nodes.filter(pl.col("node").is_in(nodes["cluster"].implode()))
    assert (reps["cluster"] == reps["node"]).all()  # a representative is in its own cluster
    d = task_diversity(texts, texts, [None] * len(texts))
    assert d["samples"] == len(texts) and 0 < d["top20_cluster_share"] <= 1 and d["opening_entropy_bits"] >= 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=2, max_size=12))
def test_gram_tokens_give_the_jaccard_of_the_shingles(texts):
    """The compiled comparison's tokens (exact code points, numbered by rarity) hold the same sets as
    the shingles, so their Jaccard is the shingles' Jaccard."""
    from genixer_ray.decontam.index import normalize_text

    texts = [normalize_text(t) for t in texts]
    tokens, starts = gram_tokens(texts)
    sets = [frozenset(tokens[starts[i] : starts[i + 1]].tolist()) for i in range(len(texts))]
    assert all(starts[i + 1] - starts[i] == len(sets[i]) for i in range(len(texts)))  # distinct within a text
    for i in range(len(texts)):
        for j in range(len(texts)):
            assert math.isclose(jaccard(sets[i], sets[j]), jaccard(frozenset(shingles(texts[i])), frozenset(shingles(texts[j]))))


def test_clusters_are_the_exact_components_of_templated_questions():
    """Every pair at exact 3-gram Jaccard >= 0.7 ends in one cluster, and no two questions below it
    without a chain of such pairs between them (a brute-force check on 200 templated questions)."""
    from genixer_ray.decontam.index import normalize_text
    from genixer_ray.question_clusters import JACCARD, connected_components

    things, places = ["car", "bus", "dog", "cat", "man", "tree", "sign", "cup"], ["on", "under", "near", "behind", "next to"]
    texts = [f"Is there a {a} {p} the {b}?" for a in things for p in places for b in things][:200]
    norm = [normalize_text(t) for t in texts]
    grams = [frozenset(shingles(t)) for t in norm]
    pairs = [(i, j) for i in range(len(norm)) for j in range(i + 1, len(norm)) if jaccard(grams[i], grams[j]) >= JACCARD]
    truth = connected_components(len(norm), pairs)
    nodes = cluster_frame(with_refs(pl.DataFrame({"status": "ok", "parsed_task": "t", "question": texts})))
    found = dict(zip(nodes["first"].to_list(), nodes["cluster"].to_list(), strict=True))
    assert pairs and all(found[i] == found[j] for i, j in pairs)
    assert all((found[i] == found[j]) == (truth[i] == truth[j]) for i in range(len(norm)) for j in range(len(norm)))


def test_a_megabyte_question_is_measured():
    d = task_diversity(["x" * 1_000_000, "What is it?"], ["a", "b"], [None, None])
    assert d["unique_questions"] == 2 and d["question_clusters"] == 2 and 0 < d["distinct_1"] <= 1


def test_a_runs_figures_from_its_shards_equal_those_of_its_rows(tmp_path):
    """write_diversity without Ray reads the committed shards (not the uncommitted one) and gives
    the figures of their rows; diversity.json holds them."""
    import json

    from genixer_ray.diversity import write_diversity
    from genixer_ray.store import RunStore

    store = RunStore(str(tmp_path / "run"))
    questions = ["What color is the car?", "What colour is the car?", "Where is the dog?", "What color is the bus?"]
    shards = [[{"shard": k, "image_id": f"i{k}{n}", "sample": 0, "status": "ok", "parsed_task": "common_vqa", "question": q,
                "answer": "a b", "answer_boxes": [[0.0, 0.0, 0.5, 0.5]]} for n, q in enumerate(questions[2 * k : 2 * k + 2])] for k in range(2)]
    for k, rows in enumerate(shards):
        store.commit_shard(k, to_frame(rows), {})
    store.write_frame(store.shard_name(2), to_frame([shards[0][0] | {"shard": 2}]))  # no marker: not committed
    out = write_diversity(store.url, {})
    assert out == run_diversity(to_frame(shards[0] + shards[1]).select(["status", "parsed_task", "question", "answer", "answer_boxes"]))
    assert out["common_vqa"]["samples"] == 4 and out["common_vqa"]["question_clusters"] == 2
    assert json.loads((tmp_path / "run" / "diversity.json").read_text()) == out
