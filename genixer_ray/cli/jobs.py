"""The commands that run work: tiny models, generation, training, configs, filter passes, checkpoint conversion."""

from __future__ import annotations

import argparse
import sys

from genixer_ray.cli.common import framework_console, verbose_flag


def _cmd_make_tiny_models(args: argparse.Namespace) -> int:
    from genixer_ray.tiny_models import make_tiny_models

    paths = make_tiny_models(args.dir, seed=args.seed)
    print(f"generator: {paths.generator}\nclip:      {paths.clip}")
    return 0


def _cmd_show_config(args: argparse.Namespace) -> int:
    import yaml

    from genixer_ray.config import FilterPassConfig, RunConfig, TrainConfig, load_config
    from genixer_ray.config.loading import config_kind, kind_name

    kind = {"run": RunConfig, "filter": FilterPassConfig, "train": TrainConfig}.get(args.kind) or config_kind(args.config)
    cfg = load_config(args.config, args.overrides, kind=kind)
    how = "given by --kind" if args.kind else "detected from its keys; --kind to choose"
    print(f"# a {kind_name(kind)} ({how})", file=sys.stderr)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def _print_summary(summary, verb: str, out) -> None:
    """The job's last lines: its rows by status and code, where they went, and the funnel per task."""
    from genixer_ray.schema import code_counts

    statuses = ", ".join(f"{k}={v}" for k, v in sorted(summary.by_status.items()))
    print(
        f"{verb} {summary.rows} rows ({statuses}; {code_counts(summary.by_error)}; kept: {summary.kept}) in {summary.shards} shards "
        f"({summary.skipped_shards} already committed) to {summary.output}",
        file=out,
    )
    from genixer_ray.filters.decide import FILTERS, FUNNEL_ORDER

    steps = [s for s in FUNNEL_ORDER if any(s in c for c in summary.funnel.values())]
    if any(f in steps for f in FILTERS):  # some filter ran: show where rows were lost, per task
        print(f"{'task':<22}" + "".join(f"{s:>13}" for s in steps), file=out)
        for task, c in sorted(summary.funnel.items()):
            print(f"{task:<22}" + "".join(f"{c.get(s, 0):>13}" for s in steps), file=out)


def _run_job(args: argparse.Namespace, job, verb: str, kind=None) -> int:
    from genixer_ray.config import RunConfig, load_config
    from genixer_ray.engines.base import shutdown_generators

    cfg = load_config(args.config, args.overrides, kind=kind or RunConfig)  # fails here, before any model is loaded
    with framework_console(args) as con:
        try:
            summary = job(cfg)
        finally:
            shutdown_generators()
        _print_summary(summary, verb, con.out)
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from genixer_ray.pipeline import run_generation

    return _run_job(args, run_generation, "wrote")


def _cmd_filter(args: argparse.Namespace) -> int:
    from genixer_ray.config import FilterPassConfig
    from genixer_ray.filter_pass import run_filter

    return _run_job(args, lambda cfg: run_filter(args.run, cfg), "filtered", FilterPassConfig)


def _cmd_convert_checkpoint(args: argparse.Namespace) -> int:
    from genixer_ray.convert_checkpoint import convert_original_llava

    out = convert_original_llava(args.src, args.dst, vision_tower=args.vision_tower)
    print(f"llava-hf checkpoint written to {out}; use engines.generator.model={out} (with prompts.profile=genixer-l for Genixer-L)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from genixer_ray.config import TrainConfig, load_config
    from genixer_ray.train import train_generator

    cfg = load_config(args.config, args.overrides, kind=TrainConfig)  # fails here, before Ray starts
    with framework_console(args) as con:
        summary = train_generator(cfg)
        print(f"trained {summary['steps']} steps (final loss {summary['loss']:.3f}); engines.generator.model={summary['export_path']}", file=con.out)
    return 0


def add_job_commands(sub) -> None:
    """The commands that run work: models, generation, training, configs, filter passes."""
    p = sub.add_parser("make-tiny-models", help="build the tiny local generator and CLIP models (no download)")
    p.add_argument("dir", help="output directory (gets generator/ and clip/)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same files")
    p.set_defaults(func=_cmd_make_tiny_models)

    for name, func, help_text in (
        ("generate", _cmd_generate, "run (or resume) a generation run"),
        ("train", _cmd_train, "fine-tune a generator with Ray Train and export it"),
        ("show-config", _cmd_show_config, "print a validated run, filter pass or training configuration"),
    ):
        p = sub.add_parser(name, help=help_text)
        verbose_flag(p)
        p.add_argument("config", nargs="?", help="run config YAML, a path or URL such as s3://... (default: the embedded demo run)")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config keys, e.g. sampling.temperature=0.2")
        if name == "show-config":
            p.add_argument("--kind", choices=("run", "filter", "train"), help="the kind of config (default: detected from its keys)")
        p.set_defaults(func=func)

    p = sub.add_parser("filter", help="score and select an existing run's rows (resumable); writes RUN/filtered/NAME")
    verbose_flag(p)
    p.add_argument("run", help="the generation run's folder: {output.path}/{name}, local or s3://")
    p.add_argument("config", nargs="?", help="a filter pass config (configs/filter.yaml): filters, the judge, their engines")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config keys, e.g. engines.judge.model=DIR or filters.judge.policy=band")
    p.set_defaults(func=_cmd_filter)

    p = sub.add_parser("convert-checkpoint", help="convert an original-LLaVA checkpoint (e.g. Genixer-L) to the llava-hf layout vLLM loads")
    p.add_argument("src", help="the original checkpoint's directory (LlavaLlamaForCausalLM: config.json, weights, tokenizer)")
    p.add_argument("dst", help="the llava-hf directory to write")
    p.add_argument("--vision-tower", help="CLIP vision model directory or hub id (default: the config's mm_vision_tower)")
    p.set_defaults(func=_cmd_convert_checkpoint)


