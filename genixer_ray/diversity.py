"""How diverse a run's questions and answers are, per task.

Per task (the parsed task of every ``ok`` row): how many samples and unique questions (once
normalized: :func:`~genixer_ray.decontam.index.normalize_text`); distinct-1 and distinct-2 of the
questions (unique words, and unique pairs of adjacent words, over all of them); the share of the
samples that the 20 largest near-duplicate question clusters hold, with the largest clusters'
sizes and an example each; the entropy (bits) of the questions' openings (their first three
words); the answers' length in words; and the size of the answers' boxes (area, a share of the
image). Written as ``diversity.json`` beside a run's manifest, read by ``inspect`` and the report.

Near-duplicate questions: MinHash (rensa, 128 permutations) over the character 3-grams of the
normalized question, candidates from LSH bands, kept at an estimated Jaccard of 0.7 or more;
clusters are their connected components. Character 3-grams, not words: questions are short, and
one changed word moves word shingles far. Measured on pairs (exact Jaccard, 3-grams / words):
"What color is the car?" against "What colour is the car?" 0.77 / 0.67, against "What color is
the bus?" 0.73 / 0.67 (one template, clustered), "What is the man holding?" against "What is the
woman holding?" 0.76 / 0.67, "Is there a cat in the image?" against "... a dog ..." 0.64 / 0.75
(not clustered), "What color is the car?" against "Where is the dog?" 0.22 / 0.29.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

import numpy as np

from genixer_ray.decontam.index import normalize_text

SHINGLE = 3  # characters
JACCARD = 0.7
NUM_PERM = 128
ESTIMATE_MARGIN = 0.1  # of the MinHash estimate below JACCARD that the exact Jaccard still checks
TOP_CLUSTERS = 20
SHOWN_CLUSTERS = 5
COLUMNS = ["status", "parsed_task", "question", "answer", "answer_boxes"]


def shingles(normalized: str) -> list[str]:
    """The character :data:`SHINGLE`-grams of a normalized question (the whole text if shorter)."""
    if len(normalized) <= SHINGLE:
        return [normalized]
    return [normalized[i : i + SHINGLE] for i in range(len(normalized) - SHINGLE + 1)]


def jaccard(a: frozenset, b: frozenset) -> float:
    """Jaccard similarity of two sets (1.0 for two empty ones)."""
    return len(a & b) / len(a | b) if a or b else 1.0


def connected_components(n: int, pairs: Iterable[tuple[int, int]]) -> list[int]:
    """A label per item ``0..n-1``: items joined by ``pairs`` (directly or through others) share
    one, the smallest index of their component (union-find)."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        a, b = root(i), root(j)
        parent[max(a, b)] = min(a, b)
    return [root(i) for i in range(n)]


def near_pairs(normalized: list[str]) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` of near-duplicate questions: the same text, or an exact Jaccard of character
    3-grams >= :data:`JACCARD` among the candidates of MinHash LSH bands whose estimate is within
    :data:`ESTIMATE_MARGIN` of it (the estimate alone, with 128 permutations, kept a third more
    pairs than there are among templated questions, most of them one word apart; BENCHMARKS.md,
    "Question clusters")."""
    from rensa import RMinHash, RMinHashLSH

    first: dict[str, int] = {}
    pairs: list[tuple[int, int]] = []
    hashes, owners, grams = [], [], []
    for i, q in enumerate(normalized):
        if q in first:  # the same text: one MinHash for all its copies
            pairs.append((first[q], i))
            continue
        first[q] = i
        grams.append(frozenset(shingles(q)))
        m = RMinHash(num_perm=NUM_PERM, seed=0)
        m.update(list(grams[-1]))
        hashes.append(m)
        owners.append(i)
    lsh = RMinHashLSH(threshold=JACCARD, num_perm=NUM_PERM, num_bands=32)
    lsh.insert_many(hashes)
    for k, m in enumerate(hashes):  # one query at a time: all candidates at once held 10 GB at a million
        candidates = lsh.query(m)
        # The estimate first (fast, in rensa), with a margin of 2.5 of its standard deviations at
        # 0.7 (about 0.04): the exact Jaccard then decides only pairs that may pass.
        pairs += [(owners[k], owners[c]) for c in candidates
                  if c > k and hashes[k].jaccard(hashes[c]) >= JACCARD - ESTIMATE_MARGIN and jaccard(grams[k], grams[c]) >= JACCARD]
    return pairs


def question_clusters(normalized: list[str]) -> list[int]:
    """A cluster label per question: near-duplicates (:func:`near_pairs`) share one, the label of
    the cluster's first question."""
    return connected_components(len(normalized), near_pairs(normalized))


def _distinct(texts: list[list[str]], n: int) -> float | None:
    grams = [tuple(words[i : i + n]) for words in texts for i in range(len(words) - n + 1)]
    return round(len(set(grams)) / len(grams), 4) if grams else None


def _entropy(counts: Counter) -> float:
    total = sum(counts.values())
    # sum of p * log2(1/p): one opening gives 0.0, not the -0.0 that negating a zero sum would
    return round(sum(c / total * math.log2(total / c) for c in counts.values()), 4) if total else 0.0


def _spread(values: list[float]) -> dict | None:
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(a.mean()), 4), "p50": round(float(np.percentile(a, 50)), 4), "p90": round(float(np.percentile(a, 90)), 4)}


def task_diversity(questions: list[str], answers: list[str], boxes: list[list[list[float]] | None]) -> dict:
    """The figures of one task's samples (see the module's docstring)."""
    normalized = [normalize_text(q or "") for q in questions]
    labels = question_clusters(normalized)
    sizes = Counter(labels)
    largest = sizes.most_common(TOP_CLUSTERS)
    words = [q.split() for q in normalized]
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for bs in boxes if bs for b in bs if len(b) == 4]
    return {
        "samples": len(questions),
        "unique_questions": len(set(normalized)),
        "distinct_1": _distinct(words, 1),
        "distinct_2": _distinct(words, 2),
        "question_clusters": len(sizes),
        "top20_cluster_share": round(sum(n for _, n in largest) / len(questions), 4) if questions else None,
        "largest_clusters": [{"size": n, "example": questions[label]} for label, n in largest[:SHOWN_CLUSTERS]],
        "opening_entropy_bits": _entropy(Counter(" ".join(w[:3]) for w in words)),
        "answer_words": _spread([len((a or "").split()) for a in answers]),
        "answer_box_area": _spread(areas),
    }


def write_diversity(store_url: str, storage_options: dict) -> dict:
    """Compute the figures of a run's (or a pass's) committed rows and write ``diversity.json``."""
    from genixer_ray.store import RunStore

    store = RunStore(store_url, storage_options)
    figures = run_diversity(store.read_rows(columns=COLUMNS))
    store.write_json("diversity.json", figures)
    return figures


def run_diversity(rows) -> dict:
    """Per task, the figures of a frame of a run's rows (:data:`COLUMNS`; ``ok`` rows count)."""
    ok = rows.filter(rows["status"] == "ok")
    out = {}
    for task in sorted(t for t in ok["parsed_task"].unique().to_list() if t):
        part = ok.filter(ok["parsed_task"] == task)
        out[task] = task_diversity(part["question"].to_list(), part["answer"].to_list(), part["answer_boxes"].to_list())
    return out
