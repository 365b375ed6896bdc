"""Rating on five axes: the image and sample first and the axis last, against the axis first; and
rating against the single judge question, on one vLLM engine.

Rows are grounding samples (a question, an answer box: every axis applies, grounding included) of
distinct images (vLLM's caches key on the pixels), rated by the 30M-parameter random generator as
judge (224-pixel images, 256 image tokens, so image and sample fill 128-token KV blocks of
vLLM-CPU). Each arm runs the stage as a filter actor does: batches of `--batch` rows, as many calls
at once as `genixer_ray.stages.filters.filter_pool` gives. Arms:

* ``rating, axis last``: the stage as built (the first axis of each row, then the other four);
* ``rating, axis first``: the same five prompts with the axis question before the sample, all at
  once (what rating looks like without the shared prefix);
* ``judge question``: the judge's one P(Yes) question per row (`filters.judge`).

The prefix-cache share is vLLM's own count of prompt tokens it served from the cache. The chat
template puts the image before any text, so the image's tokens are a shared prefix in every arm;
what the axis order changes is whether the sample's tokens are shared too.

    .venv/bin/python bench/bench_rating.py [--rows 32] [--rounds 2]
"""

import argparse
import functools
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from bench_samples import distinct_pngs  # bench/ is the script's folder, so its sibling imports

from genixer_ray.config import load_config
from genixer_ray.console import console
from genixer_ray.engines.base import get_generator, shutdown_generators
from genixer_ray.filters.judge import JudgeStage, judged_text
from genixer_ray.filters.rating import RatingStage, axis_prompt
from genixer_ray.images import decode_image
from genixer_ray.stages.filters import filter_pool, placement


class AxisFirst(RatingStage):
    """The same five prompts with the axis question first and the sample after it, all sent at once."""

    def score(self, rows: list[dict]) -> list[dict]:
        """Every axis of every row in one call (nothing waits for a shared prefix)."""
        from genixer_ray.config import SamplingConfig
        from genixer_ray.engines.base import GenerationRequest
        from genixer_ray.stages import row_image

        greedy = SamplingConfig(temperature=0.0, max_tokens=1)
        asked = [(r, a) for r in rows for a in self.cfg.axes]
        requests = [GenerationRequest(row_image(r), f"{axis_prompt(self.cfg, a)}\n{judged_text(r)}", greedy) for r, a in asked]
        for res in self.generator.next_token_logprobs(requests, self.digit_ids):
            self.tokens.update(prompt=res.prompt_tokens or 0, cached=res.cached_tokens or 0)
        return [{} for _ in rows]


def rows_of(pngs: list[bytes], side: int, tag: str) -> list[dict]:
    """Grounding rows holding their decoded image, as the filter actors get them."""
    out = []
    for i, data in enumerate(pngs):
        img = decode_image(data, max_side=side)
        out.append({
            "shard": 0, "image_id": f"{tag}-{i}", "sample": 0, "status": "ok", "parsed_task": "rec",
            "question": f"Where is the object number {i} that the photo shows near its left edge?", "answer": "[0.10,0.20,0.45,0.80]",
            "answer_boxes": [[0.1, 0.2, 0.45, 0.8]], "pixels": img.tobytes(), "height": img.shape[0], "width": img.shape[1],
        })
    return out


def run_arm(stage, rows: list[dict], batch: int, calls: int) -> dict:
    """Rows/s of ``stage`` over ``rows`` in batches, ``calls`` at once; the prefix-cache share where counted."""
    before = dict(getattr(stage, "tokens", {}))
    batches = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    t = time.perf_counter()
    with ThreadPoolExecutor(calls) as pool:
        list(pool.map(stage, batches))
    dt = time.perf_counter() - t
    tokens = getattr(stage, "tokens", None)
    hit = None
    if tokens is not None:
        prompt = tokens["prompt"] - before.get("prompt", 0)
        hit = (tokens["cached"] - before.get("cached", 0)) / prompt if prompt else None
    return {"rate": len(rows) / dt, "hit": hit}


def main() -> None:
    """Print each arm's rows/s, the ratios, and the prefix-cache share."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--block-size", type=int, default=32, help="vLLM's KV-cache block (CPU default 128: the sample's tokens share no block)")
    args = ap.parse_args()
    with console("bench-rating", verbose=False) as con:
        say = functools.partial(print, file=con.out)
        from genixer_ray.tiny_models import make_tiny_generator

        model = str(make_tiny_generator(tempfile.mkdtemp(prefix="bench-rating-"), size="30m"))
        cfg = load_config(None, [
            "engines.generator.backend=vllm", f"engines.generator.model={model}", "engines.generator.dtype=float32", "engines.generator.max_model_len=1024",
            f"engines.generator.max_num_seqs={args.max_num_seqs}", f"engines.generator.block_size={args.block_size}", "filters.rating.enabled=true", "filters.judge.enabled=true",
            f"pools.filters.batch_size={args.batch}",
        ])
        engine = get_generator(cfg.engines.generator)
        rating, first, judge = RatingStage(cfg.filters.rating, engine), AxisFirst(cfg.filters.rating, engine), JudgeStage(cfg.filters.judge, engine)
        engines, _ = cfg.engines.for_filters(cfg.filters.enabled())  # as a pass places them: on the filter actors
        calls = filter_pool(cfg.filters, cfg.pools.filters, engines, placement(cfg.filters, set())).concurrent_calls
        run_arm(rating, rows_of(distinct_pngs(args.batch, 250), 224, "warm"), args.batch, calls)  # start-up, first compilation
        arms: dict[str, list[dict]] = {"rating, axis last": [], "rating, axis first": [], "judge question": []}
        for k in range(args.rounds):
            for j, (name, stage) in enumerate((("rating, axis last", rating), ("rating, axis first", first), ("judge question", judge))):
                arms[name].append(run_arm(stage, rows_of(distinct_pngs(args.rows, 3 * k + j), 224, f"{k}-{j}"), args.batch, calls))
        say(f"vLLM on CPU, 30m judge (256 image tokens), {args.rows} rows per arm, batches of {args.batch}, {calls} calls at once, "
            f"max_num_seqs={args.max_num_seqs}, block_size={args.block_size}; {args.rounds} rounds, arms alternating")
        mean = {name: sum(r["rate"] for r in rs) / len(rs) for name, rs in arms.items()}
        for name, rs in arms.items():
            hits = [r["hit"] for r in rs if r["hit"] is not None]
            cache = f"prefix cache {sum(hits) / len(hits):.0%}" if hits else "prefix cache not counted"
            say(f"  {name:<20} {mean[name]:8.2f} rows/s  {cache}")
        say(f"five axes, axis last / axis first, rows/s: {mean['rating, axis last'] / mean['rating, axis first']:.2f}x (target >= 2.5x)")
        say(f"time per row, five axes (axis last) / the judge question: {mean['judge question'] / mean['rating, axis last']:.2f}x "
            "(target <= 1.6x)")
        shutdown_generators()


if __name__ == "__main__":
    main()
