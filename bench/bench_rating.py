"""Rating on five axes: the image and sample first and the axis last, against the axis first; and
rating against the single judge question, on one vLLM engine.

Rows are grounding samples (a question, an answer box: every axis applies, grounding included),
each of its own image (marked after decoding, so that no two share vLLM's caches, which key on the
pixels), rated by the 30M-parameter random generator as judge (224-pixel images, 256 image
tokens). Each arm runs the stage as a filter actor does: batches of `--batch` rows, as many calls
at once as `genixer_ray.stages.filters.filter_pool` gives. Arms:

* ``axis last``: the stage as built (the first axis of each row, then the other four);
* ``axis first``: the same five prompts with the axis question before the image (the chat
  template's image placeholder after it), all at once: nothing is shared, as the target means;
* ``axis first, image first``: the axis question after the image but before the sample (the
  template's usual image position): the image alone is shared;
* ``judge question``: the judge's one P(Yes) question per row (`filters.judge`).

The prefix-cache share is vLLM's own count of prompt tokens it served from the cache.

    .venv/bin/python bench/bench_rating.py [--rows 32] [--rounds 2]
"""

import argparse
import contextlib
import functools
import itertools
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from bench_samples import distinct_pngs  # bench/ is the script's folder, so its sibling imports

from genixer_ray.config import SamplingConfig, load_config
from genixer_ray.console import console
from genixer_ray.engines.base import GenerationRequest, get_generator, shutdown_generators
from genixer_ray.filters.judge import JudgeStage, judged_text
from genixer_ray.filters.rating import SCALE, RatingStage, axis_question
from genixer_ray.images import decode_image
from genixer_ray.stages import row_image
from genixer_ray.stages.filters import filter_pool, placement


class AxisFirst(RatingStage):
    """The same five prompts with the axis question first, all sent at once."""

    def score(self, rows: list[dict]) -> list[dict]:
        """Every axis of every row in one call (nothing waits for a shared prefix)."""
        greedy = SamplingConfig(temperature=0.0, max_tokens=1)
        asked = [(r, a) for r in rows for a in self.cfg.axes]
        requests = [GenerationRequest(row_image(r), f"{axis_question(self.cfg, a)}\n{judged_text(r)}\n{SCALE}", greedy) for r, a in asked]
        for res in self.generator.next_token_logprobs(requests, self.digit_ids):
            self.tokens.update(prompt=res.prompt_tokens or 0, cached=res.cached_tokens or 0)
        return [{} for _ in rows]


@contextlib.contextmanager
def image_after_first_line(engine, enabled: bool = True):
    """While inside, ``engine`` formats each instruction's first line before the image placeholder,
    the rest after it, with the model's own chat template (the bench runs one arm at a time)."""
    if not enabled:
        yield
        return

    def fmt(instruction: str) -> str:
        first, rest = instruction.split("\n", 1)
        content = [{"type": "text", "text": first + "\n"}, {"type": "image"}, {"type": "text", "text": rest}]
        return engine.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)

    engine.format_prompt = fmt
    try:
        yield
    finally:
        del engine.format_prompt


_marks = itertools.count(1)


def rows_of(pngs: list[bytes], side: int, tag: str) -> list[dict]:
    """Grounding rows holding their decoded image, as the filter actors get them; each image's
    corner carries a mark of its own after decoding, so that no two rows of the run share pixels."""
    out = []
    for i, data in enumerate(pngs):
        img = decode_image(data, max_side=side).copy()
        k = next(_marks)
        img[:4, :4, 0], img[:4, :4, 1] = k % 256, k // 256
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
        stages = {
            "axis last": RatingStage(cfg.filters.rating, engine),
            "axis first": AxisFirst(cfg.filters.rating, engine),
            "axis first, image first": AxisFirst(cfg.filters.rating, engine),
            "judge question": JudgeStage(cfg.filters.judge, engine),
        }
        engines, _ = cfg.engines.for_filters(cfg.filters.enabled())  # as a pass places them: on the filter actors
        calls = filter_pool(cfg.filters, cfg.pools.filters, engines, placement(cfg.filters, set())).concurrent_calls
        arms: dict[str, list[dict]] = {name: [] for name in stages}
        for k in range(-1, args.rounds):  # round -1: start-up, compilation of every arm's shapes
            for name, stage in stages.items():
                with image_after_first_line(engine, name == "axis first"):
                    rows = rows_of(distinct_pngs(args.rows if k >= 0 else 2 * args.batch, k % 256), 224, f"{k}-{name}")
                    (arms[name] if k >= 0 else []).append(run_arm(stage, rows, args.batch, calls))
        say(f"vLLM on CPU, 30m judge (256 image tokens), {args.rows} rows per arm, batches of {args.batch}, {calls} calls at once, "
            f"max_num_seqs={args.max_num_seqs}, block_size={args.block_size}; {args.rounds} rounds, arms alternating")
        mean = {name: sum(r["rate"] for r in rs) / len(rs) for name, rs in arms.items()}
        for name, rs in arms.items():
            hits = [r["hit"] for r in rs if r["hit"] is not None]
            cache = f"prefix cache {sum(hits) / len(hits):.0%}" if hits else "prefix cache not counted"
            say(f"  {name:<24} {mean[name]:8.2f} rows/s  {cache}")
        say(f"five axes, axis last / axis first (nothing shared), rows/s: {mean['axis last'] / mean['axis first']:.2f}x (target >= 2.5x)")
        say(f"five axes, axis last / axis first with the image first, rows/s: {mean['axis last'] / mean['axis first, image first']:.2f}x")
        say(f"time per row, five axes (axis last) / the judge question: {mean['judge question'] / mean['axis last']:.2f}x "
            "(target <= 1.6x)")
        shutdown_generators()


if __name__ == "__main__":
    main()
