"""Near-duplicate questions across a corpus: the clustering behind diversity.json, at a million, on Ray Data.

A run's end clusters each task's questions (:mod:`genixer_ray.question_clusters`: nodes per
distinct normalized question, MinHash in rensa, LSH bands through Ray Data's groupby, exact 3-gram
Jaccard >= 0.7 in the band groups, connected components). Here ``--sizes`` synthetic questions
(templated, as a fine-tuned generator writes them: "What color is the {thing}?", ...; one in ten
an earlier question with one to three characters changed), written as a run's 256-row shards, go
through :func:`~genixer_ray.question_clusters.cluster_dataset` of
:func:`~genixer_ray.question_clusters.run_rows` (as a run's end reads them) on a local Ray with every core, each size in
a fresh process, after a small warm-up run (workers started, kernels compiled): wall time,
throughput in MB of question text per second per core (shuffles included), the driver's and the
largest Ray worker's peak private memory. Against data-juicer's published Ray MinHash
deduplication, about 0.44 MB/s per core.

Quality, on ``--sample`` distinct questions: the clusters against those of every pair whose exact
3-gram Jaccard is >= 0.7 (brute force, a compiled loop over all pairs, then their connected
components), as pairwise precision, recall and F1 over the pairs of questions put in one cluster;
and how many of the brute-force pairs the clusters join.

    .venv/bin/python bench/bench_question_dedup.py [--sizes 100000,1000000] [--sample 20000]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np
import polars as pl
from bench_scale import WorkerPeaks  # bench/ is the script's folder, so its sibling imports

from genixer_ray.console import console
from genixer_ray.decontam.index import normalize_text
from genixer_ray.question_clusters import JACCARD, cluster_dataset, cluster_frame, connected_components, shingles

DATA_JUICER_MB_S_PER_CORE = 0.44
SHARD_ROWS = 256  # a run's rows per shard (run.shard_size's default)
TEMPLATES = (
    "What color is the {a} {t}?", "How many {t}s are in the image?", "Is there a {t} {p} the {u}?", "What is the {t} {p} the {u}?",
    "Where is the {a} {t}?", "What is the man holding {p} the {u}?", "Which {t} is closer to the {u}?", "Is the {t} {a}?",
    "What is written on the {t}?", "Why is the {t} {p} the {u}?", "What kind of {t} is shown?", "Can you see a {a} {t}?",
)
THINGS = ("car", "bus", "dog", "cat", "man", "woman", "table", "chair", "tree", "sign", "truck", "horse", "cup", "phone",
          "laptop", "bottle", "umbrella", "kite", "train", "boat", "clock", "bench", "bird", "bicycle", "pizza", "sandwich")
ADJECTIVES = ("red", "blue", "green", "small", "large", "old", "wooden", "white", "black", "striped", "empty", "shiny")
PLACES = ("on", "under", "next to", "behind", "in front of", "near", "inside")


def questions(n: int, seed: int = 0) -> list[str]:
    """``n`` questions as a generator writes them; one in ten an edited copy of an earlier one."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i > 10 and rng.random() < 0.1:
            q = list(out[rng.randrange(i)])
            for _ in range(rng.randint(1, 3)):
                q[rng.randrange(len(q))] = rng.choice("abcdefghijklmnopqrstuvwxyz ")
            out.append("".join(q))
        else:
            out.append(rng.choice(TEMPLATES).format(a=rng.choice(ADJECTIVES), t=rng.choice(THINGS), p=rng.choice(PLACES),
                                                    u=rng.choice(THINGS)))
    return out


def frame_of(texts: list[str]) -> pl.DataFrame:
    """Rows as a run's shards hold them (one task), each with its ref."""
    return pl.DataFrame({"status": "ok", "parsed_task": "common_vqa", "question": texts, "ref": np.arange(len(texts), dtype=np.int64)})


def write_shards(n: int, folder: str) -> int:
    """``n`` questions written as a run's shards hold them (``data/shard-*.parquet``, 256 rows
    each, ``ROW_COLUMNS``); returns the shards' count."""
    from genixer_ray.store import RunStore

    frame = frame_of(questions(n)).drop("ref")
    os.makedirs(f"{folder}/data")
    shards = 0
    for shards, i in enumerate(range(0, n, SHARD_ROWS), start=1):
        frame.slice(i, SHARD_ROWS).write_parquet(f"{folder}/{RunStore.shard_name(shards - 1)}")
    return shards


def measure(n: int, folder: str, partitions: int | None) -> dict:
    """One size, in this process: cluster_dataset over the ``n`` questions of ``folder``'s shards,
    read as a run's end reads them (:func:`~genixer_ray.question_clusters.run_rows`: Ray Data's
    tasks, dozens of shards each; the driver holds no row), on a local Ray."""
    import glob

    import ray

    from genixer_ray.question_clusters import question_partitions, run_rows

    shards = len(glob.glob(f"{folder}/data/*.parquet"))
    megabytes = sum(len(t.encode()) for t in questions(n)) / 1e6
    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)  # the cores there are, as a run's Ray
    partitions = partitions or question_partitions(n, cores)
    cluster_dataset(ray.data.from_arrow(frame_of(questions(5000, seed=1)).to_arrow()), partitions)  # warm-up
    peaks = WorkerPeaks()
    t = time.perf_counter()
    nodes = cluster_dataset(run_rows(folder, {}, list(range(shards)), n), partitions)
    took = time.perf_counter() - t
    peak = peaks.stop()
    ray.shutdown()
    return {"rows": n, "megabytes": megabytes, "seconds": took, "cores": cores, "partitions": partitions, "nodes": nodes.height,
            "clusters": nodes["cluster"].n_unique(), "driver_mib": peak["driver_private_peak"] / 2**20, "worker_mib": peak["worker_private_peak"] / 2**20}


def exact_pairs(texts: list[str]) -> set[tuple[int, int]]:
    """Every pair of (normalized) ``texts`` whose exact character 3-gram Jaccard is >= JACCARD (brute force, compiled)."""
    import numba

    from genixer_ray.jaccard_kernels import overlap

    sets = [np.unique(np.array([hash(s) for s in shingles(q)], dtype=np.int64)) for q in texts]
    flat, starts = np.concatenate(sets), np.cumsum([0] + [len(s) for s in sets])

    @numba.njit(cache=True)
    def scan(flat, starts, threshold):
        a, b = [0][:0], [0][:0]
        n = len(starts) - 1
        for i in range(n):
            for j in range(i + 1, n):
                inter = overlap(flat, starts, i, j)
                if inter >= threshold * ((starts[i + 1] - starts[i]) + (starts[j + 1] - starts[j]) - inter):
                    a.append(i)
                    b.append(j)
        return a, b

    a, b = scan(flat, starts, JACCARD)
    return set(zip(a, b, strict=True))


def pair_counts(labels: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """Pairs in one cluster of ``labels``, of ``truth``, and of both (pairwise clustering counts)."""
    def pairs(counts) -> int:
        return int((counts * (counts - 1) // 2).sum())

    both = pl.DataFrame({"a": labels, "b": truth}).group_by("a", "b").len()["len"].to_numpy()
    return pairs(np.unique(labels, return_counts=True)[1]), pairs(np.unique(truth, return_counts=True)[1]), pairs(both)


def quality(sample: int) -> None:
    """The clusters of ``sample`` distinct questions against those of the brute-force pairs."""
    texts = list(dict.fromkeys(normalize_text(q) for q in questions(sample * 2)))[:sample]
    t = time.perf_counter()
    exact = exact_pairs(texts)
    brute = time.perf_counter() - t
    truth = np.array(connected_components(len(texts), exact))
    nodes = cluster_frame(frame_of(texts))
    rep_first = dict(zip(nodes["node"].to_list(), nodes["first"].to_list(), strict=True))
    first_cluster = {f: rep_first[c] for f, c in zip(nodes["first"].to_list(), nodes["cluster"].to_list(), strict=True)}
    labels = np.array([first_cluster[i] for i in range(len(texts))])
    found, true, both = pair_counts(labels, truth)
    precision, recall = both / max(found, 1), both / max(true, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    joined = sum(labels[i] == labels[j] for i, j in exact)
    print(f"quality on {len(texts):,} distinct questions: {len(exact):,} pairs at exact Jaccard >= {JACCARD} (brute force, {brute:.0f} s), "
          f"{joined:,} of them in one cluster; {len(set(truth.tolist())):,} clusters of those pairs, {len(set(labels.tolist())):,} found; "
          f"pairs in one cluster: precision {precision:.4f}, recall {recall:.4f}, pair F1 {f1:.4f} (target >= 0.95)")


def main() -> None:
    """One table row per size (each in a fresh process), the memory ratio, then the quality line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100_000, 1_000_000])
    ap.add_argument("--sample", type=int, default=20_000)
    ap.add_argument("--partitions", type=int, help="shuffle partitions (default: question_partitions, by the rows)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process: measure one size, print JSON
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        with console("bench-question-dedup", verbose=False):
            result = measure(args.one, args.folder, args.partitions)
        print(json.dumps(result))
        return
    print("| questions | MB of text | distinct | clusters | partitions | seconds | MB/s per core | / data-juicer's 0.44 | driver private MiB | largest worker private MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    runs = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            write_shards(n, folder)
            child = [sys.executable, __file__, "--one", str(n), "--folder", folder, *(["--partitions", str(args.partitions)] if args.partitions else [])]
            out = subprocess.run(child, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rate = r["megabytes"] / r["seconds"] / r["cores"]
        runs.append(r)
        print(f"| {n:,} | {r['megabytes']:.1f} | {r['nodes']:,} | {r['clusters']:,} | {r['partitions']} | {r['seconds']:.1f} | {rate:.2f} | "
              f"{rate / DATA_JUICER_MB_S_PER_CORE:.1f}x | {r['driver_mib']:,.0f} | {r['worker_mib']:,.0f} |")
    if len(runs) > 1:
        first, last = runs[0], runs[-1]
        print(f"peak private memory, {last['rows']:,} / {first['rows']:,} questions: driver {last['driver_mib'] / first['driver_mib']:.2f}x, "
              f"largest worker {last['worker_mib'] / first['worker_mib']:.2f}x (target 0.8-1.2)")
    quality(args.sample)


if __name__ == "__main__":
    main()
