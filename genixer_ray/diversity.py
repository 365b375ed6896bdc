"""How diverse a run's questions and answers are, per task.

Per task (the parsed task of every ``ok`` row): how many samples and unique questions (once
normalized: :func:`~genixer_ray.decontam.index.normalize_text`); distinct-1 and distinct-2 of the
questions (unique words, and unique pairs of adjacent words, over all of them); the share of the
samples that the 20 largest near-duplicate question clusters hold
(:mod:`genixer_ray.question_clusters`), with the largest clusters' sizes and an example each; the
entropy (bits) of the questions' openings (their first three words); the answers' length in words;
and the size of the answers' boxes (area, a share of the image). Written as ``diversity.json``
beside a run's manifest, read by ``inspect`` and the report.

With Ray up the shards are read by Ray Data's tasks, which count the answers and cluster the
questions; only the distinct questions and the answers' counts come back (:func:`write_diversity`).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import polars as pl

from genixer_ray.question_clusters import (
    ROW_COLUMNS,
    cluster_dataset,
    cluster_frame,
    question_partitions,
    run_rows,
    shard_dataset,
    with_refs,
)

TOP_CLUSTERS = 20
SHOWN_CLUSTERS = 5
ANSWER_COLUMNS = ["status", "parsed_task", "answer", "answer_boxes"]


def _distinct(words: list[list[str]], counts: list[int], n: int) -> float | None:
    # Unique n-grams over all questions, copies of one text counted as often as they occur.
    grams = {tuple(ws[i : i + n]) for ws in words for i in range(len(ws) - n + 1)}
    total = sum(c * max(len(ws) - n + 1, 0) for ws, c in zip(words, counts, strict=True))
    return round(len(grams) / total, 4) if total else None


def _entropy(counts: Counter) -> float:
    total = sum(counts.values())
    # sum of p * log2(1/p): one opening gives 0.0, not the -0.0 that negating a zero sum would
    return round(sum(c / total * math.log2(total / c) for c in counts.values()), 4) if total else 0.0


def question_figures(nodes: pl.DataFrame) -> dict:
    """The question figures of one task from its labelled nodes (:func:`~genixer_ray.question_clusters.label_clusters`
    with their texts): every distinct normalized question, how many rows ask it, its cluster."""
    samples = int(nodes["count"].sum())
    sizes = (nodes.group_by("cluster").agg(size=pl.sum("count"))
             .join(nodes.select(cluster="node", first="first", example="example"), on="cluster")
             .sort(["size", "first"], descending=[True, False]))
    largest = sizes.head(TOP_CLUSTERS)
    words = [t.split() for t in nodes["text"].to_list()]
    counts = nodes["count"].to_list()
    openings: Counter = Counter()
    for ws, c in zip(words, counts, strict=True):
        openings[" ".join(ws[:3])] += c
    return {
        "samples": samples,
        "unique_questions": nodes.height,
        "distinct_1": _distinct(words, counts, 1),
        "distinct_2": _distinct(words, counts, 2),
        "question_clusters": sizes.height,
        "top20_cluster_share": round(int(largest["size"].sum()) / samples, 4) if samples else None,
        "largest_clusters": [{"size": n, "example": e} for n, e in largest.head(SHOWN_CLUSTERS).select("size", "example").iter_rows()],
        "opening_entropy_bits": _entropy(openings),
    }


class AnswerFigures:
    """The answer figures per task, taken a frame of rows (:data:`ANSWER_COLUMNS`) at a time."""

    def __init__(self) -> None:
        self.words: dict[str, list[np.ndarray]] = defaultdict(list)
        self.areas: dict[str, list[np.ndarray]] = defaultdict(list)

    def add(self, rows: pl.DataFrame) -> None:
        """Count the ``ok`` rows of ``rows``."""
        ok = rows.filter((pl.col("status") == "ok") & pl.col("parsed_task").is_not_null())
        for (task,), part in ok.group_by("parsed_task"):
            self.words[task].append(np.array([len((a or "").split()) for a in part["answer"].to_list()], dtype=np.int64))
            areas = [(b[2] - b[0]) * (b[3] - b[1]) for bs in part["answer_boxes"].to_list() if bs for b in bs if len(b) == 4]
            self.areas[task].append(np.array(areas, dtype=np.float64))

    def table(self) -> pl.DataFrame:
        """What was counted, a row per task (``task``, ``words``, ``areas``), for :meth:`merge` elsewhere."""
        tasks = sorted(self.words)
        return pl.DataFrame({"task": tasks, "words": [np.concatenate(self.words[t]) for t in tasks],
                             "areas": [np.concatenate(self.areas[t]) for t in tasks]},
                            schema={"task": pl.String, "words": pl.List(pl.Int64), "areas": pl.List(pl.Float64)})

    def merge(self, table: pl.DataFrame) -> None:
        """Add what another counted (its :meth:`table`)."""
        for task, words, areas in table.iter_rows():
            self.words[task].append(np.asarray(words, dtype=np.int64))
            self.areas[task].append(np.asarray(areas, dtype=np.float64))

    def of(self, task: str) -> dict:
        """``answer_words`` and ``answer_box_area`` of ``task``."""
        def spread(parts: list[np.ndarray]):
            return _spread(np.concatenate(parts)) if parts else None

        return {"answer_words": spread(self.words.get(task, [])), "answer_box_area": spread(self.areas.get(task, []))}


def _spread(a: np.ndarray) -> dict | None:
    if not len(a):
        return None
    return {"mean": round(float(a.mean()), 4), "p50": round(float(np.percentile(a, 50)), 4), "p90": round(float(np.percentile(a, 90)), 4)}


def figures(nodes: pl.DataFrame, answers: AnswerFigures) -> dict:
    """Per task, every figure (the module's docstring), from the labelled nodes and the answers."""
    return {task: question_figures(nodes.filter(pl.col("task") == task)) | answers.of(task) for task in sorted(nodes["task"].unique().to_list())}


def run_diversity(rows: pl.DataFrame) -> dict:
    """Per task, the figures of a frame of rows (:data:`ROW_COLUMNS` and the answers'; ``ok`` rows count), in this process."""
    answers = AnswerFigures()
    answers.add(rows)
    return figures(cluster_frame(with_refs(rows.select(ROW_COLUMNS))), answers)


def task_diversity(questions: list[str], answers: list[str], boxes: list[list[list[float]] | None]) -> dict:
    """The figures of one task's samples (see the module's docstring)."""
    rows = pl.DataFrame({"status": "ok", "parsed_task": "task", "question": questions, "answer": answers,
                         "answer_boxes": boxes}, schema_overrides={"answer_boxes": pl.List(pl.List(pl.Float64))})
    return run_diversity(rows).get("task") or {}


def _answer_partials(batch, *, run_url: str, storage_options: dict):
    """Ray Data's ``map_batches`` call: shard numbers -> their answers counted (:meth:`AnswerFigures.table`)."""
    from genixer_ray.store import RunStore

    store = RunStore(run_url, storage_options)
    answers = AnswerFigures()
    for k in batch["shard"].to_pylist():
        answers.add(store.read_frame(store.shard_name(k), ANSWER_COLUMNS))
    return answers.table().to_arrow()


def write_diversity(store_url: str, storage_options: dict) -> dict:
    """Compute the figures of a run's (or a pass's) committed rows and write ``diversity.json``.

    With Ray up the shards are read by Ray Data's tasks (the answers counted there, the questions
    clustered: :func:`~genixer_ray.question_clusters.cluster_dataset`) and only the distinct
    questions and the answers' counts come here; else everything is read here, a shard at a time.
    """
    import ray

    from genixer_ray.store import RunStore

    store = RunStore(store_url, storage_options)
    shards = sorted(store.committed())
    answers = AnswerFigures()
    if ray.is_initialized() and shards:
        rows = sum(m["rows"] for m in store.markers())
        kwargs = {"run_url": store_url, "storage_options": storage_options}
        counted = shard_dataset(shards, rows).map_batches(_answer_partials, batch_size=None, batch_format="pyarrow", fn_kwargs=kwargs)
        for table in counted.iter_batches(batch_format="pyarrow", batch_size=None):
            answers.merge(pl.from_arrow(table))
        nodes = cluster_dataset(run_rows(store_url, storage_options, shards, rows), question_partitions(rows, int(ray.cluster_resources().get("CPU", 1))))
    else:
        frames = []
        for k in shards:
            frame = store.read_frame(store.shard_name(k), [*ROW_COLUMNS, *ANSWER_COLUMNS[2:]])
            answers.add(frame)
            frames.append(with_refs(frame.select(ROW_COLUMNS), k))
        nodes = cluster_frame(pl.concat(frames) if frames else pl.DataFrame(schema={"status": pl.String, "parsed_task": pl.String, "question": pl.String, "ref": pl.Int64}))
    out = figures(nodes, answers)
    store.write_json("diversity.json", out)
    return out
