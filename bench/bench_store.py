"""Object stores: a run's requests one after another against several at once, on a real S3 endpoint.

The store's steps that make one request (or a few) per shard, on moto's S3 server on loopback (the
tests' endpoint): planning (a plan file and its check per shard), the commit path (shard, check,
marker), reading every commit marker (a run's end, ``inspect``, a filter pass) and ``verify``.
Each runs twice on the same data, one request at a time (the baseline) and as the project runs
it (``RunStore.requests_in_flight``, 8 on an object store); the ratio is of the two. The endpoint
answers in well under a millisecond and shares this machine's cores, so the figures bound what
overlap gains where each request waits tens of milliseconds (a real bucket), not what it gains there.

    .venv/bin/python bench/bench_store.py [--shards 200]
"""

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' loopback endpoint

from bench_scale import ANSWER, write_manifest  # bench/ is the script's folder, so its sibling imports
from s3_endpoint import moto_server

from genixer_ray.config import FiltersConfig, InputConfig
from genixer_ray.filters.decide import decide_shard
from genixer_ray.inputs import iter_inputs
from genixer_ray.store import RunStore
from genixer_ray.verify import verify_run
from genixer_ray.writer import ShardWriter


def timed(fn) -> float:
    """Seconds ``fn()`` took."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def output_rows(shards: int, shard_size: int) -> list[dict]:
    """Rows shaped like a generation run's output, ``shard_size`` per shard."""
    row = {
        "run_id": "store", "source": "inline:x", "status": "ok", "mode": "task_agnostic", "text": ANSWER,
        "token_ids": list(range(16)), "logprobs": [-0.5] * 16, "parsed_task": "common_vqa",
        "question": "What is in the photo?", "answer": "A small test pattern.",
    }
    return [row | {"shard": i // shard_size, "image_id": f"img{i:07d}"} for i in range(shards * shard_size)]


def main() -> None:
    """Time each step both ways and print the table and the ratios."""
    import boto3

    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=200)
    ap.add_argument("--shard-size", type=int, default=256)
    args = ap.parse_args()
    n = args.shards * args.shard_size
    rows = output_rows(args.shards, args.shard_size)
    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint:
        creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
        boto3.client("s3", endpoint_url=endpoint, **creds).create_bucket(Bucket="bench-store")
        options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
        planned = list(iter_inputs(InputConfig(source=write_manifest(Path(tmp) / "manifest.parquet", n))))
        decide = functools.partial(decide_shard, cfg=FiltersConfig())
        print(f"moto S3 server on loopback; {args.shards} shards of {args.shard_size} rows ({n} rows)")
        print(f"{'step':<40}{'one at a time s':>16}{'overlapped s':>14}{'ratio':>8}")
        results = {}
        for label, in_flight in (("one", 1), ("overlapped", None)):
            store = RunStore(f"s3://bench-store/{label}/run", options)
            writer = ShardWriter(store, {k: args.shard_size for k in range(args.shards)}, decide, every_s=3600, commits_in_flight=in_flight)

            def commit(writer=writer):
                for i in range(0, n, 1024):
                    writer.add(rows[i : i + 1024])
                writer.finish()

            results[label] = {
                "plan": timed(lambda store=store: store.write_plan(iter(planned), args.shard_size, in_flight=in_flight)),
                "commit": timed(commit),
                "markers": timed(lambda store=store: list(store.markers(per_request=1 if in_flight else 1000))),
            }
            results[label]["verify"] = timed(lambda store=store: verify_by(store, in_flight, options))
        for step, what in (
            ("plan", "planning (plan file + check per shard)"), ("commit", "commit path (shard, check, marker)"),
            ("markers", "reading every commit marker"), ("verify", "verify (plan, shard, marker per shard)"),
        ):
            one, over = results["one"][step], results["overlapped"][step]
            print(f"{what:<40}{one:>16.2f}{over:>14.2f}{one / over:>7.2f}x")
        print(f"commit path: {n / results['one']['commit']:.0f} rows/s one at a time, {n / results['overlapped']['commit']:.0f} overlapped")


def verify_by(store: RunStore, in_flight: int | None, options: dict) -> None:
    """``verify_run`` on ``store``'s run, its reads ``in_flight`` at a time (``None``: the project's default)."""
    if in_flight is None:
        assert verify_run(store.url, storage_options=options).ok
        return
    init = RunStore.__init__

    def one_at_a_time(self, *a, **kw):
        init(self, *a, **kw)
        self.requests_in_flight = in_flight

    RunStore.__init__ = one_at_a_time
    try:
        assert verify_run(store.url, storage_options=options).ok
    finally:
        RunStore.__init__ = init


if __name__ == "__main__":
    main()
