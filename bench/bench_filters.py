"""Filter throughput as ratios against a one-row-at-a-time baseline measured in the same run.

The paper's filtering scripts scored one image per forward pass; the filter stages batch. For
each stage this prints rows/s at batch 1 (the baseline) and at larger batches, on the same rows:

* CLIP: box crops scored against their expressions (``ClipStage``, open_clip); then, at the
  largest batch, the stage against a bare batched open_clip forward on the same crops and texts
  (cut beforehand: what the stage adds) and against one crop per forward pass;
* judge: P(Yes) from one decode step (``JudgeStage`` on the transformers backend);
* the single-step judge against the paper's sampled reply (temperature 1, 10 tokens) at the
  largest batch: rows/s, and how often their Yes/No decisions agree.

    .venv/bin/python bench/bench_filters.py [--generator tiny | --build 1b] [--clip tiny] [--rows 64]

``--build 1b`` writes a random-weight judge of a real model's shape first (see bench_generate.py);
``--clip ViT-B-32`` gives open_clip's ViT-B/32 architecture with random weights (no download).
"""

import argparse
import functools
import tempfile

from bench_generate import timed  # bench/ is the script's folder, so its sibling imports

from genixer_ray.config import ClipFilterConfig, GeneratorConfig, JudgeConfig
from genixer_ray.console import console
from genixer_ray.engines.base import get_generator, shutdown_generators
from genixer_ray.filters.clip import ClipScorer, ClipStage, crop_box, region_texts
from genixer_ray.filters.judge import JudgeStage, says_yes
from genixer_ray.images import decode_image, embedded_image_paths


def bench_rows(n: int) -> list[dict]:
    """REC-like rows over the bundled photos, two boxes each (crops of different sizes)."""
    imgs = [decode_image(p.read_bytes(), max_side=672) for p in embedded_image_paths().values()]
    rows = []
    for i in range(n):
        im = imgs[i % len(imgs)]
        a = 0.05 + 0.01 * (i % 10)
        rows.append({
            "shard": 0, "image_id": f"r{i}", "status": "ok", "parsed_task": "q_ca", "question": "What is left of the cup?",
            "answer": f"The red ball [{a:.3f},0.100,0.600,0.700] is left of the cup [0.500,{a:.3f},0.950,0.900].",
            "answer_boxes": [[a, 0.1, 0.6, 0.7], [0.5, a, 0.95, 0.9]],
            "pixels": im.tobytes(), "height": im.shape[0], "width": im.shape[1],
        })
    return rows


def main() -> None:
    """Print rows/s and the ratio to batch 1 for each stage and batch size."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--generator", default="tiny")
    ap.add_argument("--build", choices=["tiny", "1b"], help="build a random judge of this size and use it")
    ap.add_argument("--clip", default="tiny")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()
    # Framework and engine output goes to a log file; the table to the terminal.
    with console("bench-filters", verbose=False) as con:
        say = functools.partial(print, file=con.out)
        model = args.generator
        if args.build:
            from genixer_ray.tiny_models import make_tiny_generator

            model = str(make_tiny_generator(tempfile.mkdtemp(prefix="bench-judge-"), size=args.build))
        rows = bench_rows(args.rows)
        batches = [int(b) for b in args.batches.split(",")]
        import torch

        say(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}; {args.rows} rows, 2 boxes each")
        stages = {
            f"clip {args.clip}": lambda b: ClipStage(ClipFilterConfig(enabled=True, model=args.clip, batch_size=2 * b)),
            f"judge {args.build or model}": lambda b: JudgeStage(
                JudgeConfig(enabled=True), get_generator(GeneratorConfig(model=model, backend="transformers", dtype=args.dtype, max_model_len=2048))
            ),
        }
        for name, build in stages.items():
            base = timed(build(1), rows, 1)
            say(f"{name:<22} batch=1   {base:9.2f} rows/s  x1.00 (baseline)")
            for b in batches:
                r = timed(build(b), rows, b)
                say(f"{name:<22} batch={b:<3} {r:9.2f} rows/s  x{r / base:.2f}")
        stage, bare, one = clip_comparison(args.clip, rows, batches[-1])
        say(f"clip, one crop per forward pass (baseline)   {one:9.2f} rows/s  x1.00")
        say(f"clip, bare open_clip, {2 * batches[-1]} crops per forward  {bare:9.2f} rows/s  x{bare / one:.2f}")
        say(f"clip, the stage, {2 * batches[-1]} crops per forward       {stage:9.2f} rows/s  x{stage / one:.2f} "
            f"({stage / bare:.2f}x the bare forward)")
        judge = stages[f"judge {args.build or model}"](batches[-1])
        sampled, single, agree = judge_comparison(judge, rows, batches[-1])
        say(f"judge, the paper's sampled reply (baseline)  batch={batches[-1]:<3} {sampled:9.2f} rows/s  x1.00")
        say(f"judge, one greedy step for P(Yes)             batch={batches[-1]:<3} {single:9.2f} rows/s  x{single / sampled:.2f}")
        say(f"ratio single-step / sampled judge: {single / sampled:.2f}x (target >= 5); Yes/No decisions agree on "
            f"{agree:.0%} of rows (target >= 95%; P(Yes) >= 0.5 against a reply saying Yes)")
        shutdown_generators()


def clip_comparison(clip: str, rows: list[dict], batch: int) -> tuple[float, float, float]:
    """Rows/s of the CLIP stage at ``batch`` rows per call, of a bare open_clip forward on the
    same crops and texts (cut beforehand) at the same crops per forward, and of one crop per forward."""
    from genixer_ray.stages import row_image

    stage = ClipStage(ClipFilterConfig(enabled=True, model=clip, batch_size=2 * batch))
    pairs = [(crop_box(row_image(r), box, 0.0), text) for r in rows for box, text in region_texts(r)]
    scorer = ClipScorer(clip)
    per_row = len(pairs) / len(rows)

    def forward(chunk):
        scorer.scores([c for c, _ in chunk], [t for _, t in chunk])

    return (
        timed(stage, rows, batch),
        timed(forward, pairs, 2 * batch) / per_row,
        timed(forward, pairs, 1) / per_row,
    )


def judge_comparison(judge: JudgeStage, rows: list[dict], batch: int) -> tuple[float, float, float]:
    """Rows/s of the paper's sampled judge reply and of the single greedy step, and the share of
    rows whose Yes/No the two agree on (the single step says Yes where P(Yes) >= 0.5)."""
    sampled = timed(judge._paper, rows, batch)  # the sampled reply alone, as the paper's script judged
    single = timed(judge.score, rows, batch)  # JudgeConfig's default: P(Yes) from one step, nothing sampled
    replies = [r.text for r in judge._paper(rows)]
    p = [s["judge_p_yes"] for s in judge.score(rows)]
    agree = sum((x is not None and x >= 0.5) == says_yes(t or "") for x, t in zip(p, replies, strict=True)) / len(rows)
    return sampled, single, agree


if __name__ == "__main__":
    main()
