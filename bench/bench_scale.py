"""Scale: 10,000 to 1,000,000 rows through the whole pipeline with an instant stand-in engine.

Each size runs in a fresh driver process with its own Ray instance, so every peak is that size's
own: the driver's peak RSS (``ru_maxrss``), the largest peak RSS of any Ray worker process and the
largest sum over them (sampled twice a second), and of the driver and the largest worker also the
peak of their private memory (``RssAnon``: what the process itself allocated; RSS also counts the
pages of Ray's shared-memory object store that the process has touched, which belong to the store,
bounded by its own capacity), rows/s end to end (planning and start-up included) and in steady
state (from the commits of the middle half of the shards, as ``bench_pipeline`` reads it). The
stand-in engine answers every request at once with a fixed, parseable output; it is defined here
and installed in Ray's workers by ``worker_process_setup_hook``, so no run config can select it.
Images are tiny PNGs carried inline in a Parquet manifest (the ``image`` column), so the figures
are the pipeline's own: planning, decode tasks, the actor's stages, the transfers, the writer and
the commits.

Also measured, without Ray: the driver's commit path alone (dedup, keep decisions, schema check,
Parquet shard and marker) on rows shaped like real output rows.

    .venv/bin/python bench/bench_scale.py [--sizes 10000,100000,1000000] [--commit-rows 100000]
"""

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from bench_pipeline import run_times  # bench/ is the script's folder, so its sibling imports

from genixer_ray.engines.base import GenerationResult, Generator
from genixer_ray.store import RunStore

ANSWER = "Question: What is in the photo? Answer: A small test pattern."


class InstantGenerator(Generator):
    """A stand-in engine: every request answered at once with :data:`ANSWER` (benchmarks only)."""

    backend = "standin"
    model_path = "standin"
    processor = None

    def __init__(self, cfg=None):
        pass

    def generate(self, requests):
        """One fixed, parseable result per request."""
        return [GenerationResult(text=ANSWER, token_ids=list(range(16)), logprobs=[-0.5] * 16, prompt_tokens=48) for _ in requests]

    def next_token_logprobs(self, requests, token_ids):
        """Not needed: the scale runs enable no filter."""
        raise NotImplementedError

    def format_prompt(self, instruction: str) -> str:
        """The instruction itself."""
        return instruction


def install_standin() -> None:
    """Ray worker setup hook: generator actors of this process's runs get the stand-in engine."""
    import genixer_ray.stages

    genixer_ray.stages.get_generator = InstantGenerator


def write_manifest(path: Path, n: int) -> str:
    """A Parquet manifest of ``n`` rows, each a small PNG inline (eight distinct patterns)."""
    import numpy as np
    import polars as pl
    from PIL import Image

    pngs = []
    for k in range(8):
        buf = io.BytesIO()
        Image.fromarray(np.full((32, 32, 3), 30 * k, dtype=np.uint8)).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    pl.DataFrame({"image_id": [f"img{i:07d}" for i in range(n)], "image": [pngs[i % 8] for i in range(n)]}).write_parquet(path)
    return str(path)


def private_bytes(pid: int) -> int:
    """A process's private resident memory (``RssAnon`` of ``/proc/<pid>/status``, Linux), 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("RssAnon:")), 0)


class WorkerPeaks:
    """Samples the RSS and private memory of every Ray worker process (``ray::`` titles), and the
    driver's private memory, until stopped."""

    def __init__(self, every_s: float = 0.5):
        self.every_s, self.one, self.total, self.largest = every_s, 0, 0, ""
        self.one_private = self.driver_private = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        driver = os.getpid()
        while not self._stop.wait(self.every_s):
            self.driver_private = max(self.driver_private, private_bytes(driver))
            sizes = []  # (rss, title) of each worker process
            for p in psutil.process_iter(["name", "cmdline", "memory_info"]):
                if (p.info["name"] or "").startswith("ray::") and p.info["memory_info"]:
                    sizes.append((p.info["memory_info"].rss, " ".join(p.info["cmdline"] or [p.info["name"]]).strip()))
                    self.one_private = max(self.one_private, private_bytes(p.pid))
            if sizes:
                top, name = max(sizes)
                if top > self.one:
                    self.one, self.largest = top, name
                self.total = max(self.total, sum(rss for rss, _ in sizes))

    def stop(self) -> dict:
        """Stop sampling; the peaks in bytes and the title of the worker with the largest RSS."""
        self._stop.set()
        self._thread.join()
        return {
            "worker_peak": self.one, "workers_peak_sum": self.total, "largest_worker": self.largest,
            "worker_private_peak": self.one_private, "driver_private_peak": self.driver_private,
        }


def one_size(manifest: str, out: str, n: int) -> dict:
    """Run the pipeline over ``manifest`` in this process; its figures."""
    import ray

    from genixer_ray.config import load_config
    from genixer_ray.console import console
    from genixer_ray.pipeline import run_generation
    from genixer_ray.ray_start import local_ray_cpus

    cfg = load_config(None, [
        f"input.source={manifest}", f"output.path={out}", "name=scale", "engines.generator.backend=transformers",
        "pools.generator.batch_size=64", "pools.decode.batch_size=64",
    ])
    with console("bench-scale", verbose=False):
        # As run_generation would start Ray (ray_start.ensure_ray), plus the stand-in's setup hook.
        reserved = cfg.pools.generator.reserved_cpus
        ray.init(runtime_env={"worker_process_setup_hook": install_standin}, **local_ray_cpus(None, reserved))
        peaks = WorkerPeaks()
        started, t = time.time(), time.perf_counter()
        summary = run_generation(cfg)
        wall = time.perf_counter() - t
        driver_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        memory = peaks.stop()
        ray.shutdown()
    # Every image generated for; some answers do not parse as their task (one fixed answer for all nine).
    assert summary.rows == n and not set(summary.by_error) & {"missing", "read_failed", "not_an_image", "truncated"}, summary.counts()
    first, _, steady = run_times(RunStore(summary.output))
    return {
        "rows": n, "wall_s": wall, "rows_per_s": n / wall, "steady_rows_per_s": steady,
        "first_batch_s": first - started, "driver_peak": driver_peak, **memory,
    }


def commit_rate(n: int, shard_size: int = 256) -> float:
    """Rows/s of the driver's commit path alone: :class:`ShardWriter` on rows shaped like output rows."""
    import functools

    from genixer_ray.config import FiltersConfig
    from genixer_ray.filters.decide import decide_shard
    from genixer_ray.writer import ShardWriter

    row = {
        "run_id": "scale", "source": "inline:x", "image_width": 640, "image_height": 480, "status": "ok", "mode": "task_agnostic",
        "prompt_profile": "genixer", "template_id": "agnostic-0", "instruction": "Write a question and its answer.", "text": ANSWER,
        "token_ids": list(range(16)), "logprobs": [-0.5] * 16, "finish_reason": "stop", "prompt_tokens": 48, "parsed_task": "common_vqa",
        "question": "What is in the photo?", "answer": "A small test pattern.", "generator": "standin", "generator_hash": "0" * 16,
        "backend": "standin", "seed": 1, "temperature": 0.7, "top_p": 0.9, "max_tokens": 96, "created_at": datetime.now(UTC),
    }
    expected = {k: min(shard_size, n - k * shard_size) for k in range(-(-n // shard_size))}
    rows = [row | {"shard": i // shard_size, "image_id": f"img{i:07d}"} for i in range(n)]
    with tempfile.TemporaryDirectory() as d:
        writer = ShardWriter(RunStore(d), expected, functools.partial(decide_shard, cfg=FiltersConfig()), every_s=3600)
        t = time.perf_counter()
        for i in range(0, n, 1024):  # as output blocks arrive
            writer.add(rows[i : i + 1024])
        writer.finish()
        return n / (time.perf_counter() - t)


def main() -> None:
    """Print one line per size, the spread of each figure across sizes, and the commit path's rate."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--commit-rows", type=int, default=100_000)
    ap.add_argument("--one", nargs=3, metavar=("MANIFEST", "OUT", "N"), help=argparse.SUPPRESS)  # a child run
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one[0], args.one[1], int(args.one[2]))))
        return
    mib = 1 << 20
    print("stand-in engine, 32x32 PNGs inline, shards of 256, batches of 64, one generator actor")
    print(f"{'rows':>9} {'wall s':>8} {'rows/s':>8} {'steady':>8} {'1st batch s':>11} {'driver MiB':>10} {'private':>8} "
          f"{'worker MiB':>10} {'private':>8} {'workers MiB':>11}  largest worker")
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as d:
            manifest = write_manifest(Path(d) / "manifest.parquet", n)
            out = subprocess.run(
                [sys.executable, __file__, "--one", manifest, str(Path(d) / "runs"), str(n)], capture_output=True, text=True, check=True
            ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        results.append(r)
        print(
            f"{n:>9} {r['wall_s']:>8.1f} {r['rows_per_s']:>8.0f} {r['steady_rows_per_s']:>8.0f} {r['first_batch_s']:>11.1f} "
            f"{r['driver_peak'] / mib:>10.0f} {r['driver_private_peak'] / mib:>8.0f} {r['worker_peak'] / mib:>10.0f} "
            f"{r['worker_private_peak'] / mib:>8.0f} {r['workers_peak_sum'] / mib:>11.0f}  {r['largest_worker']}",
            flush=True,
        )
    if len(results) > 1:
        first, last = results[0], results[-1]
        for key, what in (
            ("driver_peak", "driver peak memory"), ("driver_private_peak", "driver peak private memory"),
            ("steady_rows_per_s", "steady rows/s"), ("worker_peak", "worker peak memory"),
            ("worker_private_peak", "worker peak private memory"),
        ):
            print(f"{what}: {last['rows']} rows / {first['rows']} rows = x{last[key] / first[key]:.2f} (target 0.80-1.20)")
    print(f"commit path alone ({args.commit_rows} rows, shards of 256): {commit_rate(args.commit_rows):.0f} rows/s (target >= 10000)")


if __name__ == "__main__":
    main()
