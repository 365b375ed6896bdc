"""Near-duplicate question clusters of a whole run, on Ray Data: the clustering behind diversity.json.

Two questions are near-duplicates when the character 3-grams of their normalized texts
(:func:`~genixer_ray.decontam.index.normalize_text`) have a Jaccard similarity of at least
:data:`JACCARD`; clusters are the connected components. Character 3-grams, not words: questions
are short, and one changed word moves word shingles far. Measured on pairs (exact Jaccard,
3-grams / words): "What color is the car?" against "What colour is the car?" 0.77 / 0.67, against
"What color is the bus?" 0.73 / 0.67 (one template, clustered), "What is the man holding?"
against "What is the woman holding?" 0.76 / 0.67, "Is there a cat in the image?" against "... a
dog ..." 0.64 / 0.75 (not clustered), "What color is the car?" against "Where is the dog?" 0.22 /
0.29.

The steps, each a function of Polars frames, run by Ray Data over a run's shards
(:func:`cluster_dataset` of :func:`run_rows`) or in one process (:func:`cluster_frame`):

1. **Nodes** (:func:`question_nodes`, in the read tasks): a block's ``ok`` rows collapsed to one
   row per distinct (task, normalized question), with its count, its first row and that row's
   question as written. Copies of one text are one node from here on: a run repeats its
   questions many times, and only distinct texts are hashed and compared.
2. **Signatures** (:func:`band_keys`, after a groupby on the node, which merges a text's nodes of
   every shard): a MinHash (rensa, :data:`NUM_PERM` permutations) per node, cut into
   :data:`BANDS` bands of :data:`ROWS`; each band's values hashed to a 64-bit key. Two texts at
   Jaccard 0.7 share a band with probability 1 - (1 - 0.7^5)^10 = 0.84, at 0.8 0.98, at 0.9
   0.9998; a pair missed is mostly joined through others (99.8% of the pairs at 0.7 or more end in
   one cluster; 20 bands: 99.98%, in a third more time; BENCHMARKS.md, "Question clusters").
3. **Edges** (:func:`partition_edges`, a groupby on the band keys' partition): the nodes of each
   band key, paired, and joined where their exact 3-gram Jaccard is >= :data:`JACCARD` (the
   MinHash only proposes; the estimate alone kept a third more pairs than there are among
   templated questions, most of them one word apart: BENCHMARKS.md, "Question clusters"); a pair
   the partition's edges already join is not compared.
4. **Clusters** (:func:`label_clusters`): connected components of the edges; each cluster is
   named by its representative, the node with the most rows, then the earliest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from genixer_ray.decontam.index import normalize_text

if TYPE_CHECKING:
    from genixer_ray.store import RunStore

SHINGLE = 3  # characters
JACCARD = 0.7
BANDS, ROWS = 10, 5
NUM_PERM = BANDS * ROWS
ROWS_PER_PARTITION = 125_000  # of a run's rows: the groupbys' partitions grow with a large run, so that one call's memory does not
ROWS_PER_READ = 50_000
ROW_BITS = 32  # a row's ref: its shard << 32 | its row in the shard
ROW_COLUMNS = ["status", "parsed_task", "question"]
NODES_SCHEMA = {"node": pl.UInt64, "task": pl.String, "text": pl.String, "example": pl.String, "count": pl.Int64, "first": pl.Int64}
EDGES_SCHEMA = {"a": pl.UInt64, "b": pl.UInt64}
_MIX = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: spreads a band's values over the key


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
    one, the smallest index of their component (:func:`~genixer_ray.jaccard_kernels.components`)."""
    from genixer_ray.jaccard_kernels import components

    a, b = np.array(list(pairs), dtype=np.int64).reshape(-1, 2).T
    return components(n, a, b).tolist()


def with_refs(rows: pl.DataFrame, shard: int = 0) -> pl.DataFrame:
    """``rows`` of one shard with each row's ``ref``: ``shard << 32 | row``."""
    return rows.with_columns(ref=(shard << ROW_BITS) + pl.int_range(pl.len(), dtype=pl.Int64))


def _raw_questions(ok: pl.DataFrame) -> pl.DataFrame:
    # Each distinct question as written once (a run repeats them), normalized, with its node.
    import xxhash

    raw = (ok.select(task="parsed_task", example=pl.col("question").fill_null(""), ref="ref").sort("ref")
           .group_by("task", "example", maintain_order=True).agg(count=pl.len(), first=pl.first("ref")))
    text = [normalize_text(q) for q in raw["example"].to_list()]
    node = [xxhash.xxh3_64_intdigest(f"{t}\0{x}".encode()) for t, x in zip(raw["task"].to_list(), text, strict=True)]
    return raw.with_columns(text=pl.Series(text, dtype=pl.String), node=pl.Series(node, dtype=pl.UInt64))


def _ok(rows: pl.DataFrame) -> pl.DataFrame:
    return rows.filter((pl.col("status") == "ok") & pl.col("parsed_task").is_not_null())


def _nodes(raw: pl.DataFrame) -> pl.DataFrame:
    # The distinct questions as written (_raw_questions) merged by their normalized text.
    return merge_nodes(raw.select(list(NODES_SCHEMA))).cast(NODES_SCHEMA)


def question_nodes(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` (:data:`ROW_COLUMNS` and ``ref``, a row's ``shard << 32 | row``) as nodes
    (:data:`NODES_SCHEMA`): one per distinct (task, normalized question) of the ``ok`` rows."""
    return _nodes(_raw_questions(_ok(rows)))


def row_nodes(rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The nodes of ``rows`` (:func:`question_nodes`) and each of their ``ok`` rows (:data:`ROW_COLUMNS`,
    ``ref`` and any others, kept) with its ``node``; each question normalized once for both."""
    ok = _ok(rows)
    raw = _raw_questions(ok)
    keys = raw.select(parsed_task="task", question="example", node="node")
    return _nodes(raw), ok.with_columns(pl.col("question").fill_null("")).join(keys, on=["parsed_task", "question"], how="left", maintain_order="left")


def merge_nodes(nodes: pl.DataFrame) -> pl.DataFrame:
    """Nodes of several shards, each text once: counts summed, the earliest row and its question kept."""
    return nodes.sort("first").group_by("node", maintain_order=True).agg(
        task=pl.first("task"), text=pl.first("text"), example=pl.first("example"), count=pl.sum("count"), first=pl.first("first"),
    ).select(list(NODES_SCHEMA))


def band_keys(nodes: pl.DataFrame) -> pl.DataFrame:
    """Each node's :data:`BANDS` band keys (an array column ``bands``): its MinHash's band values,
    with the band's number and the node's task, hashed to 64 bits."""
    import xxhash
    from rensa import RMinHash

    digests = []
    for text in nodes["text"].to_list():
        m = RMinHash(num_perm=NUM_PERM, seed=0)
        m.update(shingles(text))
        digests.append(m.digest())
    sigs = np.array(digests, dtype=np.uint64).reshape(nodes.height, NUM_PERM)
    tasks = np.array([xxhash.xxh3_64_intdigest(t.encode()) for t in nodes["task"].to_list()], dtype=np.uint64)
    with np.errstate(over="ignore"):  # the mixing wraps around 2^64 on purpose
        keys = tasks[:, None] + np.arange(BANDS, dtype=np.uint64)[None, :] * _MIX
        for r in range(ROWS):
            keys = (keys ^ sigs[:, r::ROWS]) * _MIX
            keys ^= keys >> np.uint64(29)
    return nodes.with_columns(bands=pl.Series(keys, dtype=pl.Array(pl.UInt64, BANDS)))


def band_rows(nodes: pl.DataFrame, partitions: int = 1) -> pl.DataFrame:
    """One row per (band key, node) of nodes with ``bands``: ``key``, ``node``, ``text``, ``part``."""
    rows = nodes.select("node", "text", key="bands").explode("key")
    return rows.with_columns(part=(pl.col("key") % partitions).cast(pl.Int16))


def gram_tokens(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each text's character :data:`SHINGLE`-grams (:func:`shingles`) as sorted, distinct integers,
    all in one array, and each text's start there (``n + 1``): a gram is its code points, 21 bits
    each (exact, no hash; code point 0, which normalized text never holds, pads a short text)."""
    from genixer_ray.jaccard_kernels import gram_sets

    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    points = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    return gram_sets(points, lengths, SHINGLE)


def partition_edges(rows: pl.DataFrame) -> pl.DataFrame:
    """Edges ``(a, b)`` (nodes) among a partition's band rows that join, directly or through
    others, every two nodes sharing a band key whose texts' exact 3-gram Jaccard is >=
    :data:`JACCARD`: a spanning forest (:func:`~genixer_ray.jaccard_kernels.group_forest`; every
    pair of a template's hundreds of variants shares a band, and checking all of them cost 30x)."""
    from genixer_ray.jaccard_kernels import group_forest

    shared = rows.filter(pl.len().over("key") > 1)
    if shared.is_empty():
        return pl.DataFrame(schema=EDGES_SCHEMA)
    nodes = shared.select("node", "text").unique("node").sort("node")
    ids = nodes["node"].to_numpy()
    tokens, starts = gram_tokens(nodes["text"].to_list())
    member = pl.Series(np.searchsorted(ids, shared["node"].to_numpy()))
    groups = shared.select("key", member=member, size=pl.Series(np.diff(starts))[member]).sort("key", "size", "member")
    keys = groups["key"].to_numpy()
    group_starts = np.r_[np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]), len(keys)]
    a, b = group_forest(group_starts, groups["member"].to_numpy(), tokens, starts, JACCARD)
    return pl.DataFrame({"a": ids[a], "b": ids[b]}, schema=EDGES_SCHEMA)


def label_clusters(nodes: pl.DataFrame, edges: pl.DataFrame) -> pl.DataFrame:
    """``nodes`` (``node``, ``count``, ``first`` at least) with ``cluster``: the representative node
    of its connected component of ``edges`` (the most rows, then the earliest)."""
    from genixer_ray.jaccard_kernels import components

    nodes = nodes.sort("node")
    ids = nodes["node"].to_numpy()
    a, b = np.searchsorted(ids, edges["a"].to_numpy()), np.searchsorted(ids, edges["b"].to_numpy())
    nodes = nodes.with_columns(component=pl.Series(components(len(ids), a, b), dtype=pl.Int64))
    reps = nodes.sort(["count", "first"], descending=[True, False]).group_by("component", maintain_order=True).agg(cluster=pl.first("node"))
    return nodes.join(reps, on="component").drop("component")


def cluster_nodes(nodes: pl.DataFrame) -> pl.DataFrame:
    """Merged nodes (:func:`merge_nodes`) labelled with their clusters, in this process."""
    nodes = band_keys(nodes)
    return label_clusters(nodes.drop("bands"), partition_edges(band_rows(nodes)))


def cluster_frame(rows: pl.DataFrame) -> pl.DataFrame:
    """The labelled nodes of ``rows`` (:data:`ROW_COLUMNS` and ``ref``), in this process."""
    return cluster_nodes(merge_nodes(question_nodes(rows)))


def capped(rows: pl.DataFrame, clusters: pl.DataFrame, cap: int, score: str) -> pl.Series:
    """The refs of the rows beyond the ``cap`` best of their cluster: ``rows`` (``ref``, ``node``,
    ``score``), ``clusters`` the labelled nodes; the highest ``score`` first (none last), then the earliest."""
    ranked = (rows.join(clusters.select("node", "cluster"), on="node").sort(["cluster", score, "ref"], descending=[False, True, False], nulls_last=True)
              .with_columns(rank=pl.int_range(pl.len()).over("cluster")))
    return ranked.filter(pl.col("rank") >= cap)["ref"]


def view_rows(store: RunStore, k: int, condition: str, columns: list[str] | None = None, left_out: list[int] | None = None) -> pl.DataFrame:
    """Run shard ``k``'s rows of the view ``condition`` (only ``columns`` when given), each with its
    ``ref`` (``k << 32 | row``), but the refs ``left_out`` (:func:`capped_refs`)."""
    from genixer_ray.views import selector

    rows = with_refs(store.read_frame(store.shard_name(k), columns), k).filter(selector(condition))
    return rows.filter(~pl.col("ref").is_in(pl.Series(left_out, dtype=pl.Int64).implode())) if left_out else rows


def capped_refs(store: RunStore, condition: str, cap: int | None, score: str) -> dict[int, list[int]]:
    """Per run shard, the refs (sorted) of the view's rows that ``cap`` leaves out
    (:func:`capped`, for ``publish`` and ``export``; none without a cap): the view read a shard at
    a time, only the columns it needs, and only its distinct questions and each row's ref, node
    and score held."""
    from genixer_ray.views import view_columns

    if not cap:
        return {}
    columns = sorted({*view_columns(condition), *ROW_COLUMNS, score})
    nodes, rows = [], []
    for k in sorted(store.committed()):
        shard_nodes, shard_rows = row_nodes(view_rows(store, k, condition, columns))
        nodes.append(shard_nodes)
        rows.append(shard_rows.select("ref", "node", score))
    if not rows:
        return {}
    refs = capped(pl.concat(rows), cluster_nodes(merge_nodes(pl.concat(nodes))), cap, score).sort()
    by_shard = pl.DataFrame({"ref": refs}).group_by(shard=pl.col("ref") // (1 << ROW_BITS), maintain_order=True)
    return {shard: group["ref"].to_list() for (shard,), group in by_shard}


def question_partitions(rows: int, cpus: int) -> int:
    """The groupbys' shuffle partitions for a run of ``rows`` rows on ``cpus`` CPUs: image dedup's
    (:func:`~genixer_ray.image_dedup.shuffle_partitions`), or one per :data:`ROWS_PER_PARTITION`
    rows when that is more (a partition's memory stays flat)."""
    from genixer_ray.image_dedup import shuffle_partitions

    return max(shuffle_partitions(cpus), -(-rows // ROWS_PER_PARTITION))


def _nodes_of_rows(batch, *, partitions: int):
    """Ray Data's ``map_batches`` call: rows -> their nodes (:func:`question_nodes`), each with its partition."""
    nodes = question_nodes(pl.from_arrow(batch))
    return nodes.with_columns(part=(pl.col("node") % partitions).cast(pl.Int16)).to_arrow()


def _merged_with_bands(part):
    """Ray Data's ``map_groups`` call: a node partition -> each node once (:func:`merge_nodes`), with its band keys."""
    return band_keys(merge_nodes(pl.from_arrow(part).drop("part"))).to_arrow()


def _band_rows_of(batch, *, partitions: int):
    return band_rows(pl.from_arrow(batch), partitions).to_arrow()


def _edges_of(part):
    """Ray Data's ``map_groups`` call: a band partition -> its edges (:func:`partition_edges`)."""
    return partition_edges(pl.from_arrow(part)).to_arrow()


def _frame(ds, schema: dict) -> pl.DataFrame:
    # Only the schema's columns of each block are copied out of the object store (not the bands).
    frames = [pl.from_arrow(t.select(list(schema))) for t in ds.iter_batches(batch_format="pyarrow", batch_size=None)]
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)


def cluster_dataset(rows, partitions: int) -> pl.DataFrame:
    """The labelled nodes (:func:`label_clusters`, with their texts) of a Ray dataset of rows
    (:data:`ROW_COLUMNS` and ``ref``): nodes per block, merged and signed after a groupby on the
    node, edges after a groupby on the band keys (``partitions`` shuffle partitions each), the
    components here. Holds the distinct questions' nodes and the edges, not the rows."""
    # Ray Data's tasks shuffle, not its default aggregator actors, which each groupby started
    # afresh (BENCHMARKS.md, "Question clusters"). Set on the dataset's own context: a dataset
    # copies the process's context when it is made, and those made from it share that copy.
    rows.context.shuffle_strategy = "sort_shuffle_pull_based"
    nodes = rows.map_batches(_nodes_of_rows, batch_size=None, batch_format="pyarrow", fn_kwargs={"partitions": partitions})
    merged = nodes.groupby("part", num_partitions=partitions).map_groups(_merged_with_bands, batch_format="pyarrow").materialize()
    bands = merged.map_batches(_band_rows_of, batch_size=None, batch_format="pyarrow", fn_kwargs={"partitions": partitions})
    edges = bands.groupby("part", num_partitions=partitions).map_groups(_edges_of, batch_format="pyarrow")
    return label_clusters(_frame(merged, NODES_SCHEMA), _frame(edges, EDGES_SCHEMA))


def _shard_rows(batch, *, run_url: str, storage_options: dict):
    """Ray Data's ``map_batches`` call: shard numbers -> their committed rows (:data:`ROW_COLUMNS`) with refs."""
    from genixer_ray.store import RunStore

    store = RunStore(run_url, storage_options)
    return pl.concat([with_refs(store.read_frame(store.shard_name(k), ROW_COLUMNS), k) for k in batch["shard"].to_pylist()]).to_arrow()


def shard_dataset(shards: list[int], rows: int):
    """A run's shard numbers (of ``rows`` rows in all) as a Ray dataset whose blocks hold about
    :data:`ROWS_PER_READ` rows' shards each: a read task takes dozens of a run's 256-row shards,
    not one each (a million rows are 3,907 of them)."""
    import ray

    blocks = max(1, min(len(shards), -(-rows // ROWS_PER_READ)))
    return ray.data.from_items([{"shard": k} for k in shards], override_num_blocks=blocks)


def run_rows(run_url: str, storage_options: dict, shards: list[int], rows: int):
    """The committed rows of a run's ``shards`` (``rows`` in all) as a Ray dataset (:data:`ROW_COLUMNS` and ``ref``)."""
    return shard_dataset(shards, rows).map_batches(
        _shard_rows, batch_size=None, batch_format="pyarrow", fn_kwargs={"run_url": run_url, "storage_options": storage_options})
