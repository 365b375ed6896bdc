"""Near-duplicate questions across a corpus: the MinHash clustering behind diversity.json, at a million.

A run's end clusters each task's questions (``diversity.near_pairs``: character 3-grams of the
normalized question, MinHash with 128 permutations in rensa, 32 LSH bands, pairs kept at an
estimated Jaccard of 0.7 or more). Here ``--sizes`` synthetic questions (templated, as a
fine-tuned generator writes them: "What color is the {thing}?", ...; one in ten an earlier
question with one to three characters changed) go through it, each size in a fresh process:
wall time, throughput in MB of question text per second per core (it runs on one core), and the
process's peak memory. Against data-juicer's published Ray MinHash deduplication, about 0.44 MB/s
per core. Quality: on ``--sample`` distinct questions, the pairs found against every pair whose
exact 3-gram Jaccard is >= 0.7, computed by brute force (a compiled loop over all pairs).

    .venv/bin/python bench/bench_question_dedup.py [--sizes 100000,1000000] [--sample 20000]
"""

import argparse
import json
import random
import resource
import subprocess
import sys
import time

import numpy as np

from genixer_ray.decontam.index import normalize_text
from genixer_ray.diversity import JACCARD, near_pairs, shingles

DATA_JUICER_MB_S_PER_CORE = 0.44
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


def measure(n: int) -> dict:
    """One size, in this process: near_pairs over ``n`` normalized questions."""
    texts = questions(n)
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    t = time.perf_counter()
    pairs = near_pairs([normalize_text(q) for q in texts])
    took = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"rows": n, "megabytes": megabytes, "seconds": took, "pairs": len(pairs), "peak_mib": peak}


def exact_pairs(texts: list[str]) -> set[tuple[int, int]]:
    """Every pair of (normalized) ``texts`` whose exact character 3-gram Jaccard is >= JACCARD (brute force, compiled)."""
    import numba

    sets = [np.unique(np.array([hash(s) for s in shingles(q)], dtype=np.int64)) for q in texts]
    flat, starts = np.concatenate(sets), np.cumsum([0] + [len(s) for s in sets])

    @numba.njit(cache=True)
    def scan(flat, starts, threshold):
        a, b = [0][:0], [0][:0]
        n = len(starts) - 1
        for i in range(n):
            for j in range(i + 1, n):
                p, q, inter = starts[i], starts[j], 0
                while p < starts[i + 1] and q < starts[j + 1]:
                    if flat[p] == flat[q]:
                        inter += 1
                        p += 1
                        q += 1
                    elif flat[p] < flat[q]:
                        p += 1
                    else:
                        q += 1
                union = (starts[i + 1] - starts[i]) + (starts[j + 1] - starts[j]) - inter
                if inter >= threshold * union:
                    a.append(i)
                    b.append(j)
        return a, b

    a, b = scan(flat, starts, JACCARD)
    return set(zip(a, b, strict=True))


def quality(sample: int) -> None:
    # Distinct texts only: copies of one text are joined to its first (a star, not every pair),
    # which is the same cluster; pairs among distinct texts are what the MinHash estimate decides.
    texts = list(dict.fromkeys(normalize_text(q) for q in questions(sample * 2)))[:sample]
    t = time.perf_counter()
    truth = exact_pairs(texts)
    brute = time.perf_counter() - t
    found = {(min(i, j), max(i, j)) for i, j in near_pairs(texts)}
    hit = len(found & truth)
    precision, recall = hit / max(len(found), 1), hit / max(len(truth), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    print(f"quality on {len(texts):,} distinct questions: {len(truth):,} pairs at exact Jaccard >= {JACCARD} (brute force, {brute:.0f} s), "
          f"{len(found):,} found; precision {precision:.3f}, recall {recall:.3f}, pair F1 {f1:.3f} (target >= 0.95)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100_000, 1_000_000])
    ap.add_argument("--sample", type=int, default=20_000)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process: measure one size, print JSON
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    print("| questions | MB of text | seconds | MB/s per core | / data-juicer's 0.44 | near pairs | peak memory (MiB) |")
    print("|---|---|---|---|---|---|---|")
    peaks = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rate = r["megabytes"] / r["seconds"]
        peaks.append(r["peak_mib"])
        print(f"| {n:,} | {r['megabytes']:.1f} | {r['seconds']:.1f} | {rate:.2f} | {rate / DATA_JUICER_MB_S_PER_CORE:.1f}x | "
              f"{r['pairs']:,} | {r['peak_mib']:,.0f} |")
    if len(peaks) > 1:
        print(f"peak memory, {args.sizes[-1]:,} / {args.sizes[0]:,} questions: {peaks[-1] / peaks[0]:.2f}x (target 0.8-1.2)")
    quality(args.sample)


if __name__ == "__main__":
    main()
