"""Resume: stop a run at about half, run it again, and count the work done twice.

Three runs of the same `--rows` images (the bundled photos under new ids; the tiny generator,
transformers backend) on one local Ray instance, each driver a `genixer-ray generate`-like child
process: a whole run (the baseline), then a run whose driver is killed (SIGKILL) once half its
shards are committed, then the same command again, which resumes. Every row the generate stage
produces is counted by a Ray worker setup hook (defined here, installed through the children's
runtime environment, so no run config can select it); rows generated beyond the rows of the run
are work redone. Wall times give the same from the other side: (stopped + resumed) / whole.

    .venv/bin/python bench/bench_resume.py [--rows 1024] [--shard-size 64]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COUNT_ENV = "GENIXER_BENCH_GENERATED"


def count_generated() -> None:
    """Ray worker setup hook: every generate-stage call appends its row count to the file named in
    :data:`COUNT_ENV` (one short ``O_APPEND`` write per call, whole under concurrent writers)."""
    import genixer_ray.stages.generate

    stage = genixer_ray.stages.generate.GenerateStage
    call = stage.__call__

    def counted(self, batch):
        out = call(self, batch)
        fd = os.open(os.environ[COUNT_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{sum(r['status'] == 'ok' for r in out)}\n".encode())
        finally:
            os.close(fd)
        return out

    stage.__call__ = counted


def child(address: str, args: list[str], count_file: str) -> None:
    """A run's driver: join the Ray instance with the counting hook, then run the generation."""
    import ray

    from genixer_ray.config import load_config
    from genixer_ray.console import console
    from genixer_ray.pipeline import run_generation

    with console("bench-resume", verbose=False):
        ray.init(address=address, runtime_env={"worker_process_setup_hook": count_generated, "env_vars": {COUNT_ENV: count_file}})
        run_generation(load_config(None, args))


def generated(count_file: Path) -> int:
    """Rows the generate stage produced, summed over its calls."""
    return sum(int(x) for x in count_file.read_text().split()) if count_file.exists() else 0


def main() -> None:
    """Print the three runs' times, the rows generated and the share of work redone."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--child", nargs=3, metavar=("ADDRESS", "ARGS_JSON", "COUNT_FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], json.loads(args.child[1]), args.child[2])
        return

    import ray

    from genixer_ray.console import console
    from genixer_ray.images import write_photo_manifest
    from genixer_ray.ray_start import local_ray_cpus
    from genixer_ray.store import RunStore

    with console("bench-resume", verbose=False) as con, tempfile.TemporaryDirectory() as tmp:
        manifest = write_photo_manifest(Path(tmp) / "manifest.jsonl", args.rows)
        ray.init(**local_ray_cpus(None, 1), include_dashboard=False, log_to_driver=False)
        address = ray.get_runtime_context().gcs_address
        shards = -(-args.rows // args.shard_size)

        def start(name: str, count: Path) -> tuple[subprocess.Popen, RunStore]:
            run = [f"input.source={manifest}", f"output.path={tmp}/runs", f"name={name}", f"output.shard_size={args.shard_size}",
                   "engines.generator.backend=transformers", "engines.generator.dtype=float32", "sampling.max_tokens=32"]
            cmd = [sys.executable, __file__, "--child", address, json.dumps(run), str(count)]
            return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), RunStore(f"{tmp}/runs/{name}")

        def finish(proc: subprocess.Popen) -> None:
            if proc.wait() != 0:
                raise SystemExit(f"a run failed (exit {proc.returncode}); see $GENIXER_RAY_HOME/logs/bench-resume.log")

        whole_count, t = Path(tmp) / "whole.txt", time.perf_counter()
        proc, _ = start("whole", whole_count)
        finish(proc)
        whole = time.perf_counter() - t

        count, t = Path(tmp) / "resumed.txt", time.perf_counter()
        proc, store = start("resumed", count)
        while len(store.committed()) < shards / 2 and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stopped, committed, before = time.perf_counter() - t, len(store.committed()), generated(count)
        time.sleep(2)  # the killed driver's actors go down with its job
        t = time.perf_counter()
        proc, _ = start("resumed", count)
        finish(proc)
        resumed = time.perf_counter() - t
        ray.shutdown()

        say = con.out
        total = generated(count)
        print(f"{args.rows} rows in {shards} shards of {args.shard_size}; tiny generator, transformers backend, 32 new tokens", file=say)
        print(f"whole run (baseline)        {whole:7.1f} s, {generated(whole_count)} rows generated", file=say)
        print(f"stopped at {committed}/{shards} shards     {stopped:7.1f} s, {before} rows generated, "
              f"{committed * args.shard_size} committed", file=say)
        print(f"resumed                     {resumed:7.1f} s, {total - before} rows generated", file=say)
        redone = total - args.rows
        print(f"work redone: {redone} rows, {redone / args.rows:.1%} of the run; time (stopped + resumed) / whole: "
              f"{(stopped + resumed) / whole:.2f}x (each start pays the engine's start-up again)", file=say)


if __name__ == "__main__":
    main()
