"""Generator throughput as ratios against a baseline measured in the same run.

Baseline: the transformers backend, one request per `generate` call. Compared: batched calls of
the backend; transformers' own batch sampling (one global RNG: not batch-invariant), which shows
what the backend's per-row seeded sampler costs; with `--vllm`, the vLLM backend: all rows in one
call, then `--vllm-rows` rows in batches of `--vllm-batch`, one batch at a time (a synchronous
engine's way) against as many batches at once as a generator actor runs
(`EngineConfig.concurrent_batches`), with the sequences vLLM itself reports running while rows
were still being handed out (its fill: that mean over `max_num_seqs`).

    .venv/bin/python bench/bench_generate.py [--model tiny | --build 1b] [--rows 64] [--vllm]

`--build 1b` or `--build 7b` writes a random-weight generator of a real model's shape (ViT-L/14-336
with a 1B Llama, or LLaVA-1.5-7B's) to a temporary folder first: a meaningful measurement on an
accelerator, no download needed. With `--hbm-gbps` (the accelerator's memory bandwidth, GB/s) each
transformers row also gives its decode step against the bandwidth limit of decoding: every step
reads the language model's weights once, so no step is shorter than weight bytes / bandwidth. The
step is measured as the time of a batch call with T new tokens less that of the same rows with
one (prefill, the vision tower and the first token), over T - 1; the KV cache a step also reads is
left out of the limit. On CPU with the tiny model fixed costs dominate; read those ratios with
that in mind.

    .venv/bin/python bench/bench_generate.py --build 7b --dtype bfloat16 --rows 64 --max-tokens 64 --batches 8,32,64 --hbm-gbps 4800
"""

import argparse
import functools
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from genixer_ray.config import EngineConfig, SamplingConfig
from genixer_ray.console import console
from genixer_ray.engines.base import GenerationRequest, get_generator, shutdown_generators
from genixer_ray.images import decode_image, embedded_image_paths


def timed(fn, reqs, batch: int) -> float:
    """Rows per second running ``fn`` over ``reqs`` in batches of ``batch`` (after a warm-up batch)."""
    fn(reqs[:batch])
    sync()
    t = time.perf_counter()
    for i in range(0, len(reqs), batch):
        fn(reqs[i : i + batch])
    sync()
    return len(reqs) / (time.perf_counter() - t)


def in_batches(gen, reqs, batch: int, calls: int) -> tuple[float, float]:
    """Rows/s over ``reqs`` in batches of ``batch`` with ``calls`` batches at once, and the mean
    sequences vLLM ran from the start until the last batch was handed out (after a warm-up batch)."""
    from genixer_ray.engines.vllm_engine import EngineLoad

    batches = [reqs[i : i + batch] for i in range(0, len(reqs), batch)]
    gen.generate(batches[0])
    last_handed = []

    def one(item):
        k, b = item
        if k == len(batches) - 1:
            last_handed.append(gen.load.mark())
        return gen.generate(b)

    start, t = gen.load.mark(), time.perf_counter()
    with ThreadPoolExecutor(calls) as pool:
        list(pool.map(one, enumerate(batches)))
    return len(reqs) / (time.perf_counter() - t), EngineLoad.mean(start, last_handed[0])


def sync() -> None:
    """Wait for queued accelerator work so timings cover it."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def decode_step_bytes(model) -> int:
    """Bytes of the weights one decode step reads: the language model and its head, not the
    vision tower or the projector (they run once per image, in prefill)."""
    skip = ("vision_tower", "multi_modal_projector")
    return sum(p.numel() * p.element_size() for name, p in model.named_parameters() if not any(s in name for s in skip))


def native_sampling(gen):
    """transformers' built-in batch sampling on the backend's model, for comparison only."""
    import torch

    def run(reqs):
        inputs = gen._encode(reqs)
        with torch.inference_mode():
            gen.model.generate(
                **inputs, do_sample=True, temperature=reqs[0].sampling.temperature, top_p=reqs[0].sampling.top_p,
                max_new_tokens=reqs[0].sampling.max_tokens, pad_token_id=gen.processor.tokenizer.pad_token_id,
            )

    return run


def main() -> None:
    """Print rows/s and the ratio to the one-at-a-time baseline for each configuration."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--build", choices=["tiny", "1b", "7b"], help="build a random generator of this size and use it")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--vllm", action="store_true")
    ap.add_argument("--vllm-rows", type=int, default=256)
    ap.add_argument("--vllm-batch", type=int, default=8)
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--hbm-gbps", type=float, help="memory bandwidth in GB/s (H200: 4800): each rate's decode step against decoding's limit")
    args = ap.parse_args()
    # Framework and engine output goes to a log file; the table to the terminal.
    with console("bench-generate", verbose=False) as con:
        say = functools.partial(print, file=con.out)
        model = args.model
        if args.build:
            from genixer_ray.tiny_models import make_tiny_generator

            t = time.perf_counter()
            model = str(make_tiny_generator(tempfile.mkdtemp(prefix="bench-gen-"), size=args.build))
            say(f"built a random {args.build} generator in {time.perf_counter() - t:.1f} s")
        imgs = [decode_image(p.read_bytes(), max_side=672) for p in embedded_image_paths().values()]
        reqs = [
            GenerationRequest(imgs[i % len(imgs)], "Write a question and its answer.", SamplingConfig(seed=i, max_tokens=args.max_tokens))
            for i in range(args.rows)
        ]
        cfg = dict(model=model, dtype=args.dtype, max_model_len=2048)
        hf = get_generator(EngineConfig(backend="transformers", **cfg))
        say(f"device: {hf.device}; {args.rows} rows x {args.max_tokens} new tokens")
        step_s = None
        if args.hbm_gbps:
            step_bytes = decode_step_bytes(hf.model)
            step_s = step_bytes / (args.hbm_gbps * 1e9)
            say(f"decoding's bandwidth limit: {step_bytes / 1e9:.3g} GB of weights read per step at {args.hbm_gbps:g} GB/s, "
                f"{step_s * 1e3:.3g} ms a step")
            first_only = [replace(r, sampling=r.sampling.model_copy(update={"max_tokens": 1})) for r in reqs]

        def step(rate: float, rows: int, b: int) -> str:
            """The decode step of ``b``-row calls that ran ``rate`` rows/s, against the limit."""
            if not step_s or args.max_tokens < 2:
                return ""
            one = timed(hf.generate, first_only[:rows], b)
            t = (b / rate - b / one) / (args.max_tokens - 1)
            return f"  step {t * 1e3:7.2f} ms, {step_s / t:6.1%} of the limit"

        n = max(4, args.rows // 8)
        base = timed(hf.generate, reqs[:n], 1)
        say(f"transformers batch=1        {base:9.2f} rows/s  x1.00 (baseline){step(base, n, 1)}")
        batches = [int(b) for b in args.batches.split(",")]
        for b in batches:
            r = timed(hf.generate, reqs, b)
            say(f"transformers batch={b:<4}     {r:9.2f} rows/s  x{r / base:.2f}{step(r, len(reqs), b)}")
        b = batches[-1]
        r = timed(native_sampling(hf), reqs, b)
        say(f"hf native sampling batch={b:<4}{r:9.2f} rows/s  x{r / base:.2f} (not batch-invariant)")
        if args.vllm:
            vcfg = EngineConfig(backend="vllm", max_num_seqs=args.max_num_seqs, batch_size=args.vllm_batch, **cfg)
            v = get_generator(vcfg)
            r = timed(v.generate, reqs, len(reqs))
            say(f"vllm all-at-once            {r:9.2f} rows/s  x{r / base:.2f}")
            many = [
                GenerationRequest(imgs[i % len(imgs)], "Write a question and its answer.", SamplingConfig(seed=i, max_tokens=args.max_tokens))
                for i in range(args.vllm_rows)
            ]
            say(f"vLLM, {args.vllm_rows} rows in batches of {args.vllm_batch}, max_num_seqs={args.max_num_seqs}:")
            one_rate, one_run = in_batches(v, many, args.vllm_batch, 1)
            say(f"  one batch at a time       {one_rate:9.2f} rows/s  x1.00 (baseline)  {one_run:5.1f} running, fill {one_run / args.max_num_seqs:.2f}")
            k = vcfg.concurrent_batches()
            r, run = in_batches(v, many, args.vllm_batch, k)
            say(f"  {k} batches at once{'':8}{r:9.2f} rows/s  x{r / one_rate:.2f}             {run:5.1f} running, fill {run / args.max_num_seqs:.2f}")
        shutdown_generators()


if __name__ == "__main__":
    main()
