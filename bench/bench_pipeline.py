"""The whole pipeline against the paper's loop and the bare batched backend, on the same rows.

Three ways to turn N images into parsed rows, measured in one run on one machine:

* paper loop (the baseline): read, decode, generate and parse one image per call, as the Genixer
  scripts do;
* bare batched backend: the same stages without Ray, ``pools.generator.batch_size`` rows per call;
* pipeline: ``run_generation`` (Ray Data, one generator actor, shards written and committed),
  end to end (Ray already up) and in steady state (start-up and drain excluded: the middle half
  of the shards, timed by their commits).

The paper loop decodes images whole (up to ``--max-side``), as the Genixer scripts do; the bare
backend and the pipeline decode them to the size the generator takes (``pipeline.decode_input``).
A second table gives the bytes per row that move from the decode tasks to the generator actors
(the Arrow block of decoded rows), at ``--max-side`` alone and sized for the tiny generator and
for LLaVA-1.5's 336-pixel processor; and those from the generator actors to the filter actors
with four samples per image, the image in every row against once per block.

    .venv/bin/python bench/bench_pipeline.py [--rows 2048] [--baseline-rows 256] [--max-tokens 32] [--model tiny | --build 30m]

``--build 30m`` first writes the 30M-parameter random generator (224-pixel images) to a
temporary folder and uses it. ``--cpus-per-actor 2`` gives the generator actor two CPUs, and so
two torch threads (Ray sets an actor's ``OMP_NUM_THREADS`` to its CPUs; the baselines run in this
process with all of the machine's).

The baselines have no start-up to amortize (their engine is built before the clock starts), so
they run on the first ``--baseline-rows`` rows only; the pipeline's end-to-end figure includes
its start-up (actors, engines, the first shard). Both baselines run before and again after the
pipeline, and each ratio is taken against the mean of the two: the speed of a shared machine
drifts within minutes (here by up to 30%), and bracketing keeps that drift out of the ratios.

Prints one table and the ratio lines the issue's targets are stated in.
"""

import argparse
import tempfile
import time
from pathlib import Path

from genixer_ray.config import load_config
from genixer_ray.console import console
from genixer_ray.engines.base import shutdown_generators
from genixer_ray.images import write_photo_manifest
from genixer_ray.inputs import iter_inputs
from genixer_ray.pipeline import decode_input
from genixer_ray.ray_start import local_ray_cpus
from genixer_ray.stages.decode import DecodeStage
from genixer_ray.stages.generate import GenerateStage
from genixer_ray.stages.parse import ParseStage
from genixer_ray.stages.prompt import PromptStage
from genixer_ray.store import RunStore


def stages_rate(cfg, decode_cfg, rows: list[dict], batch: int) -> float:
    """Rows/s of decode (as ``decode_cfg`` says), generate and parse called on ``batch`` rows at a
    time, without Ray (after a warm-up call)."""
    decode, prompt, generate, parse = DecodeStage(decode_cfg), PromptStage(cfg), GenerateStage(cfg), ParseStage()
    parse(generate(prompt(decode(rows[:batch]))))
    t = time.perf_counter()
    for i in range(0, len(rows), batch):
        parse(generate(prompt(decode(rows[i : i + batch]))))
    return len(rows) / (time.perf_counter() - t)


def bytes_per_row(input_cfg, rows: list[dict]) -> float:
    """Mean bytes per row of the Arrow block the decode tasks hand to the generator actors."""
    from genixer_ray.builder import to_arrow
    from genixer_ray.schema import DECODED_SCHEMA

    return to_arrow(DecodeStage(input_cfg)(rows), DECODED_SCHEMA).nbytes / len(rows)


def filter_bytes_per_row(input_cfg, rows: list[dict], samples: int) -> tuple[float, float]:
    """Mean bytes per row of the block a generator actor hands to the filter actors, ``samples``
    rows per image: with the image's bytes once per row (plain Arrow, before) and once per image
    (:func:`~genixer_ray.builder.scoring_block`)."""
    from genixer_ray.builder import scoring_block, to_arrow
    from genixer_ray.schema import SCORING_SCHEMA

    out = [r | {"sample": k} for r in DecodeStage(input_cfg)(rows) for k in range(samples)]
    return to_arrow(out, SCORING_SCHEMA).nbytes / len(out), scoring_block(out).nbytes / len(out)


def pipeline_rates(cfg) -> tuple[float, float, float, float]:
    """``run_generation`` with Ray already running: (end to end rows/s, steady-state rows/s, seconds
    to its first generator batch, seconds to its first commit), as :func:`run_times` reads them."""
    from genixer_ray.pipeline import run_generation

    started, t = time.time(), time.perf_counter()
    summary = run_generation(cfg)
    end_to_end = summary.rows / (time.perf_counter() - t)
    first_batch, first_commit, steady = run_times(RunStore(summary.output))
    return end_to_end, steady, first_batch - started, first_commit - started


def run_times(store: RunStore) -> tuple[float, float, float]:
    """A finished local run's first generator batch and first commit (epoch seconds), and its
    steady-state rows/s.

    The first batch is the earliest row's ``created_at``. Steady state is read from the commit
    markers' times: the rows of the middle half of the shards, over the time between the commits
    that bound them. The first quarter is left out because its commits come late (the actor's first
    batches come from several shards at once, so counting from the first commit credits it with
    work done before), the last because the pipeline drains there.
    """
    first_batch = store.read_rows(["created_at"])["created_at"].dt.epoch("us").min() / 1e6
    commits = sorted((Path(store.path(store.marker_name(m["shard"]))).stat().st_mtime, m["rows"]) for m in store.markers())
    lo, hi = len(commits) // 4, len(commits) - 1 - len(commits) // 4
    return first_batch, commits[0][0], sum(n for _, n in commits[lo + 1 : hi + 1]) / (commits[hi][0] - commits[lo][0])


def main() -> None:
    """Measure the three ways on the same rows and print rows/s and the ratios."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2048, help="rows through the pipeline")
    ap.add_argument("--baseline-rows", type=int, default=256, help="the first rows, through the paper loop and the bare backend")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--build", choices=["tiny", "30m", "1b"], help="build a random generator of this size and use it")
    ap.add_argument("--max-side", type=int, default=1024, help="input.max_side: the longest side images are decoded to")
    ap.add_argument(
        "--cpus-per-actor", type=float, default=1.0,
        help="pools.generator.cpus_per_actor: Ray sets the generator actor's OMP_NUM_THREADS, so its torch threads, to it",
    )
    args = ap.parse_args()

    import ray

    with console("bench-pipeline", verbose=False) as con, tempfile.TemporaryDirectory() as tmp:
        if args.build:
            from genixer_ray.tiny_models import make_tiny_generator

            args.model = str(make_tiny_generator(Path(tmp) / "generator", size=args.build))
        cfg = load_config(None, [
            f"input.source={write_photo_manifest(Path(tmp) / 'manifest.jsonl', args.rows)}", f"output.path={tmp}/runs", "name=bench", "output.shard_size=64",
            f"engines.generator.model={args.model}", "engines.generator.backend=transformers", "engines.generator.dtype=float32",
            f"sampling.max_tokens={args.max_tokens}", "pools.generator.min_actors=1", "pools.generator.max_actors=1", f"pools.generator.cpus_per_actor={args.cpus_per_actor}",
            f"input.max_side={args.max_side}",
        ])
        rows = list(iter_inputs(cfg.input))[: args.baseline_rows]
        sized = decode_input(cfg)

        def baselines() -> tuple[float, float]:
            paper_bare = stages_rate(cfg, cfg.input, rows, 1), stages_rate(cfg, sized, rows, cfg.pools.generator.batch_size)
            shutdown_generators()
            return paper_bare

        before = baselines()
        ray.init(**local_ray_cpus(None, cfg.pools.generator.reserved_cpus), include_dashboard=False, log_to_driver=False)
        end_to_end, steady, first_batch, first_commit = pipeline_rates(cfg)
        ray.shutdown()
        after = baselines()
        # This VM's speed drifts by tens of percent within minutes: the baselines bracket the pipeline.
        paper, bare = ((b + a) / 2 for b, a in zip(before, after, strict=True))
        out = con.out
        print(f"rows: {args.rows} through the pipeline, the first {len(rows)} through the baselines; model: {args.build or args.model}, "
              f"transformers backend, {args.max_tokens} new tokens, batch {cfg.pools.generator.batch_size}; images decoded to {args.max_side} px "
              f"(paper loop), to a shorter side of {sized.short_side} px (the generator's input; bare and pipeline)", file=out)
        print(f"{'way':<44}{'rows/s':>10}   before, after the pipeline", file=out)
        for name, rate, spread in [
            ("paper loop, one image per call (baseline)", paper, f"{before[0]:.1f}, {after[0]:.1f}"),
            ("bare batched backend, no Ray", bare, f"{before[1]:.1f}, {after[1]:.1f}"),
            ("pipeline, end to end (Ray up)", end_to_end, ""), ("pipeline, steady state", steady, ""),
        ]:
            print(f"{name:<44}{rate:>10.1f}   {spread}".rstrip(), file=out)
        print(f"pipeline: first generator batch {first_batch:.1f} s, first commit ({cfg.output.shard_size} rows) {first_commit:.1f} s "
              "after its start", file=out)
        print(f"ratio pipeline steady / bare batched: {steady / bare:.2f}x (target >= 0.9)", file=out)
        print(f"ratio pipeline end to end / bare batched: {end_to_end / bare:.2f}x (target >= 0.8)", file=out)
        print(f"ratio pipeline end to end / paper loop: {end_to_end / paper:.2f}x (target >= 4 with the tiny model, >= 2 with 30m)", file=out)
        print(f"ratio pipeline steady / paper loop: {steady / paper:.2f}x", file=out)
        print(f"bytes per row from the decode tasks to the generator actors ({len(photos := rows[:8])} bundled photos, 300-1411 px):", file=out)
        before = bytes_per_row(cfg.input, photos)
        for name, side in [(f"max_side {args.max_side} alone (before)", None), (f"{args.build or args.model} generator ({sized.short_side} px)", sized.short_side), ("LLaVA-1.5 (336 px)", 336)]:
            b = bytes_per_row(cfg.input.model_copy(update={"short_side": side}), photos)
            print(f"  {name:<42}{b / 1024:>10.1f} KiB  x{before / b:.1f} fewer", file=out)
        print(f"bytes per row from the generator actors to the filter actors, 4 samples per image, max_side {args.max_side} "
              "(a run scoring CLIP crops):", file=out)
        copies, once = filter_bytes_per_row(cfg.input, photos, 4)
        print(f"  {'the image in every row (before)':<42}{copies / 1024:>10.1f} KiB", file=out)
        print(f"  {'the image once per block':<42}{once / 1024:>10.1f} KiB  x{copies / once:.1f} fewer", file=out)


if __name__ == "__main__":
    main()
