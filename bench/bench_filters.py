"""Filter throughput as ratios against a one-row-at-a-time baseline measured in the same run.

The paper's filtering scripts scored one image per forward pass; the filter stages batch. For
each stage this prints rows/s at batch 1 (the baseline) and at larger batches, on the same rows:

* CLIP: box crops scored against their expressions (``ClipStage``, open_clip); then, at the
  largest batch, the stage against a bare batched open_clip forward on the same crops and texts
  (cut beforehand: what the stage adds) and against one crop per forward pass;
* judge: P(Yes) from one decode step (``JudgeStage`` on the transformers backend);
* the single-step judge against a judge run as the paper's script runs it (Genixer's
  ``GenQA_filtering_mp.py``: one image per ``generate`` call, a reply sampled with temperature 1,
  top-k 10, top-p 0.95, up to 10 new tokens), on the same rows, with a judge that was trained for
  the rows' question (below): rows/s, how often their Yes/No decisions agree, and how often each
  is right. The sampled reply is also timed at the largest batch, to separate the gain of
  batching from that of reading one step instead of sampling a reply.

A judge with random weights replies random tokens, so agreement says nothing with it. The
comparison's judge is a random generator (``--judge-size``) first fine-tuned here, through the
project's own training collation (``train_worker.collate``: chat template, loss on the target),
to answer Yes or No to both prompts about noisy single-colour pictures and an answer naming a
colour; the rows it is then judged on are pictures it has not seen, half of them with the wrong
colour.

    .venv/bin/python bench/bench_filters.py [--generator tiny | --build 1b | --build 7b] [--clip tiny | --clip-arch ViT-L-14] [--rows 64]

``--build 1b`` or ``7b`` writes a random-weight judge of a real model's shape first (see
bench_generate.py); ``--clip-arch ViT-L-14`` writes open_clip's ViT-L/14 architecture with random
weights as a model directory (no download; a run's config refuses a bare architecture name).
"""

import argparse
import functools
import random
import tempfile
from pathlib import Path

from bench_generate import timed  # bench/ is the script's folder, so its sibling imports

from genixer_ray.config import ClipFilterConfig, EngineConfig, JudgeConfig
from genixer_ray.console import console
from genixer_ray.engines.base import get_generator, shutdown_generators
from genixer_ray.filters.clip import ClipScorer, ClipStage, crop_box, region_texts
from genixer_ray.filters.judge import PAPER_PROMPT, JudgeStage, judged_text, says_yes
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
    ap.add_argument("--build", choices=["tiny", "1b", "7b"], help="build a random judge of this size and use it")
    ap.add_argument("--clip", default="tiny")
    ap.add_argument("--clip-arch", help="build an open_clip architecture (ViT-L-14) with random weights and use it")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--judge-size", default="tiny", help="size of the random generator trained as the comparison's judge")
    ap.add_argument("--judge-steps", default="400,800", help="training steps (batches of 16) after which the judges are compared")
    ap.add_argument("--judge-rows", type=int, default=128, help="rows the two judges are compared on")
    args = ap.parse_args()
    # Framework and engine output goes to a log file; the table to the terminal.
    with console("bench-filters", verbose=False) as con:
        say = functools.partial(print, file=con.out)
        model = args.generator
        if args.build:
            from genixer_ray.tiny_models import make_tiny_generator

            model = str(make_tiny_generator(tempfile.mkdtemp(prefix="bench-judge-"), size=args.build))
        if args.clip_arch:
            from genixer_ray.tiny_models import make_random_clip

            args.clip = str(make_random_clip(tempfile.mkdtemp(prefix="bench-clip-"), args.clip_arch))
        rows = bench_rows(args.rows)
        batches = [int(b) for b in args.batches.split(",")]
        import torch

        say(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}; {args.rows} rows, 2 boxes each")
        stages = {
            f"clip {args.clip_arch or args.clip}": lambda b: ClipStage(ClipFilterConfig(enabled=True, model=args.clip, batch_size=2 * b)),
            f"judge {args.build or model}": lambda b: JudgeStage(
                JudgeConfig(enabled=True), get_generator(EngineConfig(model=model, backend="transformers", dtype=args.dtype, max_model_len=2048))
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
        shutdown_generators()
        folder = Path(tempfile.mkdtemp(prefix="bench-judge-"))
        losses = train_judge(folder, args.judge_size, [int(n) for n in args.judge_steps.split(",")])
        test = colour_rows(folder / "test", args.judge_rows, seed=1)
        b = batches[-1]
        for steps, loss in losses.items():
            say(f"judge for the comparison: random {args.judge_size} generator trained {steps} steps (last loss "
                f"{loss:.4f}); {args.judge_rows} unseen rows, half with the wrong colour")
            model_dir = str(folder / f"judge-{steps}")
            c = judge_comparison(JudgeStage(JudgeConfig(enabled=True), get_generator(EngineConfig(model=model_dir, backend="transformers"))), test, b)
            say(f"  as the paper's script: sampled reply, 1 row per call (baseline) {c['paper']:9.2f} rows/s  x1.00  right {c['paper_right']:.0%}")
            say(f"  sampled reply, batch={b:<3}                                 {c['sampled']:9.2f} rows/s  x{c['sampled'] / c['paper']:.2f}")
            say(f"  one greedy step for P(Yes), batch={b:<3}                     {c['single']:9.2f} rows/s  x{c['single'] / c['paper']:.2f}  "
                f"right {c['single_right']:.0%}")
            say(f"  ratio single-step / the paper's judge: {c['single'] / c['paper']:.2f}x (target >= 5); at the same batch "
                f"{c['single'] / c['sampled']:.2f}x; Yes/No decisions agree on {c['agree']:.1%} of rows (target >= 95%; "
                "P(Yes) >= 0.5 against a reply whose first word is Yes)")
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


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def colour_rows(folder: Path, n: int, *, seed: int) -> list[dict]:
    """``n`` noisy single-colour 64-pixel PNGs written to ``folder``, each with an answer naming
    its colour (``truth`` True) or another one, half and half; rows as the filter stages get them."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        colour = rng.choice(list(COLOURS))
        noise = np.random.default_rng([seed, i]).normal(0, 25, (64, 64, 3))
        pixels = np.clip(np.array(COLOURS[colour]) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        truth = rng.random() < 0.5
        said = colour if truth else rng.choice([c for c in COLOURS if c != colour])
        rows.append({
            "shard": 0, "image_id": f"c{seed}-{i}", "status": "ok", "seed": seed * 1_000_003 + i, "truth": truth,
            "image": str(folder / f"{i}.png"), "question": "What colour is the picture?", "answer": f"It is {said}.",
            "pixels": pixels.tobytes(), "height": 64, "width": 64,
        })
    return rows


def train_judge(folder: Path, size: str, checkpoints: list[int]) -> dict[int, float]:
    """Fine-tune a random ``size`` generator to answer Yes or No, to the judge stage's prompt and
    to the paper's, whether a row's answer names its picture's colour; after each number of steps
    in ``checkpoints`` write the model to ``folder/judge-{steps}``.
    Returns each checkpoint's last batch loss."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from genixer_ray.tiny_models import make_tiny_generator
    from genixer_ray.train_worker import collate

    base = make_tiny_generator(folder / "base", size=size)
    processor = AutoProcessor.from_pretrained(base)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32).to(device)
    prompts = (JudgeConfig().prompt, PAPER_PROMPT)
    samples = [
        {"image": r["image"], "target": "Yes" if r["truth"] else "No", "instruction": prompt.format(qa=judged_text(r))}
        for r in colour_rows(folder / "train", 512, seed=0) for prompt in prompts
    ]
    torch.manual_seed(0)
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses = {}
    for step in range(1, max(checkpoints) + 1):
        loss = model(**collate(processor, rng.sample(samples, 16), max_side=64).to(device)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step in checkpoints:
            losses[step] = float(loss.detach())
            model.save_pretrained(folder / f"judge-{step}")
            processor.save_pretrained(folder / f"judge-{step}")
    return losses


def judge_comparison(judge: JudgeStage, rows: list[dict], batch: int) -> dict[str, float]:
    """Rows/s of the paper's sampled reply one row per call and at ``batch`` rows per call, and of
    the single greedy step at ``batch``; the share of rows whose Yes/No the single step (Yes where
    P(Yes) >= 0.5) and the paper's reply agree on, and the share each gets right."""
    paper = timed(judge._paper, rows, 1)  # as GenQA_filtering_mp.py: one image per generate call
    sampled = timed(judge._paper, rows, batch)
    single = timed(judge.score, rows, batch)  # JudgeConfig's default: P(Yes) from one step, nothing sampled
    replies = [says_yes(r.text or "") for r in judge._paper(rows)]
    steps = [s["judge_p_yes"] is not None and s["judge_p_yes"] >= 0.5 for s in judge.score(rows)]
    truth = [r["truth"] for r in rows]

    def share(a, b):
        return sum(x == y for x, y in zip(a, b, strict=True)) / len(rows)

    return {"paper": paper, "sampled": sampled, "single": single, "agree": share(steps, replies),
            "paper_right": share(replies, truth), "single_right": share(steps, truth)}


if __name__ == "__main__":
    main()
