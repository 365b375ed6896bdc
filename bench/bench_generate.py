"""Generator throughput: rows/s of each way to run the transformers backend, as ratios.

Baseline: one request per `generate` call. Measured in the same run on the same images:
batched calls of the backend. With `--vllm`, the vLLM backend too (its start-up excluded).

    .venv/bin/python bench/bench_generate.py [--model tiny] [--rows 32] [--vllm]

On CPU with the tiny model fixed costs dominate; the ratios mean something on real models/GPUs.
"""

import argparse
import time

from genixer_ray.config import GeneratorConfig, SamplingConfig
from genixer_ray.engines.base import GenerationRequest, get_generator, shutdown_generators
from genixer_ray.images import decode_image, embedded_image_paths


def rows_per_s(gen, reqs, batch: int) -> float:
    """Rows per second generating ``reqs`` in batches of ``batch`` (after one warm-up batch)."""
    gen.generate(reqs[:batch])
    t = time.perf_counter()
    for i in range(0, len(reqs), batch):
        gen.generate(reqs[i : i + batch])
    return len(reqs) / (time.perf_counter() - t)


def main() -> None:
    """Print rows/s and the ratio to the one-at-a-time baseline for each configuration."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--vllm", action="store_true")
    args = ap.parse_args()
    imgs = [decode_image(p.read_bytes(), max_side=448) for p in embedded_image_paths().values()]
    reqs = [
        GenerationRequest(imgs[i % len(imgs)], "Write a question and its answer.", SamplingConfig(seed=i, max_tokens=args.max_tokens))
        for i in range(args.rows)
    ]
    cfg = dict(model=args.model, dtype=args.dtype, max_model_len=1024)
    hf = get_generator(GeneratorConfig(backend="transformers", **cfg))
    base = rows_per_s(hf, reqs, 1)
    print(f"transformers batch=1   {base:8.2f} rows/s  x1.00 (baseline)")
    for b in (8, 32):
        r = rows_per_s(hf, reqs, b)
        print(f"transformers batch={b:<3} {r:8.2f} rows/s  x{r / base:.2f}")
    if args.vllm:
        v = get_generator(GeneratorConfig(backend="vllm", **cfg))
        r = rows_per_s(v, reqs, len(reqs))
        print(f"vllm all-at-once       {r:8.2f} rows/s  x{r / base:.2f}")
    shutdown_generators()


if __name__ == "__main__":
    main()
