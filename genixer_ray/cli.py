"""The ``genixer-ray`` command line.

Heavy libraries (torch, vLLM, Ray) are imported inside the commands that use them, so
``genixer-ray --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from contextlib import contextmanager


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
    from genixer_ray.schema import code_counts

    statuses = ", ".join(f"{k}={v}" for k, v in sorted(summary.by_status.items()))
    print(
        f"{verb} {summary.rows} rows ({statuses}; {code_counts(summary.by_error)}; kept: {summary.kept}) in {summary.shards} shards "
        f"({summary.skipped_shards} already committed) to {summary.output}",
        file=out,
    )
    from genixer_ray.filters.decide import FILTERS

    order = ("rows", "generated", "parsed", *FILTERS, "kept")
    steps = [s for s in order if any(s in c for c in summary.funnel.values())]
    if any(f in steps for f in FILTERS):  # some filter ran: show where rows were lost, per task
        print(f"{'task':<22}" + "".join(f"{s:>13}" for s in steps), file=out)
        for task, c in sorted(summary.funnel.items()):
            print(f"{task:<22}" + "".join(f"{c.get(s, 0):>13}" for s in steps), file=out)


@contextmanager
def _framework_console(args: argparse.Namespace):
    """The command's console (framework output to a log file unless --verbose).

    Errors are said in one line on the console: ours (:mod:`genixer_ray.errors`) by their message,
    with the exit status of their family; anything else with its type, the traceback in the log.
    """
    from genixer_ray.console import console
    from genixer_ray.errors import GenixerError

    with console(args.command, verbose=args.verbose) as con:
        if con.log_path:
            print(f"[logs] Ray, vLLM and framework output: {con.log_path} (--verbose shows it here)", file=con.err, flush=True)
        try:
            yield con
        except GenixerError as e:
            print(f"error: {e}", file=con.err)
            raise _Failed(e.exit_code) from None
        except Exception as e:
            traceback.print_exc()  # into the log file (or the terminal under --verbose)
            where = f"; traceback in {con.log_path}" if con.log_path else ""
            print(f"error: {type(e).__name__}: {e}{where}", file=con.err)
            raise _Failed(1) from None


class _Failed(Exception):
    """A command failed and has said why on its console; ``exit_code`` is its exit status."""

    def __init__(self, exit_code: int):
        super().__init__(exit_code)
        self.exit_code = exit_code


def _run_job(args: argparse.Namespace, job, verb: str, kind=None) -> int:
    from genixer_ray.config import RunConfig, load_config
    from genixer_ray.engines.base import shutdown_generators

    cfg = load_config(args.config, args.overrides, kind=kind or RunConfig)  # fails here, before any model is loaded
    with _framework_console(args) as con:
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


def _cmd_export(args: argparse.Namespace) -> int:
    from genixer_ray.export import export_llava
    from genixer_ray.export_shikra import export_shikra

    export = export_shikra if args.format == "shikra" else export_llava
    counts = export(
        args.run, args.out, storage_options=_storage_options(args), image_root=args.image_root, view=_view(args),
        copy_images=args.copy_images,
    )
    if args.format == "shikra":
        files = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()) if k not in ("output", "shards", "images_copied"))
        print(f"exported to {counts['output']} from {counts['shards']} shards ({files}; {counts['images_copied']} images copied)")
        return 0
    print(
        f"exported {counts['records']} records from {counts['shards']} shards to {counts['output']} "
        f"(by task: {counts['by_task']}; {counts['images_copied']} images copied beside it)"
    )
    if counts["skipped_missing_image"]:
        print(f"left out {counts['skipped_missing_image']} rows whose image could not be read, e.g. {counts['missing_examples']}")
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from genixer_ray.console import routed_logging
    from genixer_ray.publish import example_rows, publish_run

    command = " ".join(["genixer-ray publish", args.run, args.out, *args.overrides, f"--view={_view(args)}"])
    with routed_logging(sys.stderr, sys.stderr):  # a progress line per part
        r = publish_run(args.run, args.out, overrides=args.overrides, storage_options=_storage_options(args), view=_view(args), command=command)
    tasks = ", ".join(f"{t}={n}" for t, n in sorted(r["by_task"].items())) or "none"
    print(f"published {r['rows']} rows ({tasks}) in {len(r['files'])} files to {r['output']} "
          f"({r['parts_written']} of {r['parts']} parts written now; the card: {r['output'].rstrip('/')}/README.md)")
    for row in example_rows(args.out, args.show, _storage_options(args)):
        scores = ", ".join(f"{k}={row[k]:.3f}" for k in ("clip_score", "consistency_score", "judge_p_yes") if row[k] is not None)
        print(f"  [{row['task']}] {row['question']!r} -> {row['answer']!r}  image {row['image']}  {scores}")
    print(f'load it: datasets.load_dataset("{r["output"]}", split="train")   (or polars: pl.read_parquet("{r["output"].rstrip("/")}/data/*/*.parquet"))')
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from genixer_ray.report import write_report

    out = args.out or f"{args.run.rstrip('/')}/report.html"
    r = write_report(args.run, out, storage_options=_storage_options(args), view=args.view)
    inside, outside = ("kept", "rejected") if args.view == "kept" else (f"in view {args.view.split('=', 1)[0]}", "other")
    print(f"report of {r['rows']} rows ({r['kept_shown']} {inside} and {r['rejected_shown']} {outside} samples shown): {r['output']}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from genixer_ray.inspection import format_inspection, inspect_run

    info = inspect_run(args.run, storage_options=_storage_options(args), view=args.view)
    print(json.dumps(info, indent=2, sort_keys=True) if args.json else format_inspection(info))
    return 0


def _cmd_convert_checkpoint(args: argparse.Namespace) -> int:
    from genixer_ray.convert_checkpoint import convert_original_llava

    out = convert_original_llava(args.src, args.dst, vision_tower=args.vision_tower)
    print(f"llava-hf checkpoint written to {out}; use engines.generator.model={out} (with prompts.profile=genixer-l for Genixer-L)")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from genixer_ray.publish import MARKERS
    from genixer_ray.store import RunStore
    from genixer_ray.verify import verify_published, verify_run

    so = _storage_options(args)
    store = RunStore(args.run, so)
    published = store.fs.exists(store.path(MARKERS))
    verdict = (verify_published if published else verify_run)(args.run, storage_options=so)
    print("\n".join(verdict.lines()))
    return 0 if verdict.ok else 1


def _cmd_train(args: argparse.Namespace) -> int:
    from genixer_ray.config import TrainConfig, load_config
    from genixer_ray.train import train_generator

    cfg = load_config(args.config, args.overrides, kind=TrainConfig)  # fails here, before Ray starts
    with _framework_console(args) as con:
        summary = train_generator(cfg)
        print(f"trained {summary['steps']} steps (final loss {summary['loss']:.3f}); engines.generator.model={summary['export_path']}", file=con.out)
    return 0


def _storage_options(args: argparse.Namespace) -> dict:
    """The ``--storage-options`` JSON of a command that reads a run."""
    import json

    from genixer_ray.errors import UserError

    try:
        options = json.loads(args.storage_options)
    except ValueError as e:
        raise UserError(f"--storage-options is not JSON: {e}") from None
    if not isinstance(options, dict):
        raise UserError("--storage-options must be a JSON object of fsspec options")
    return options


def _view(args: argparse.Namespace) -> str:
    """The ``--view`` of a command that selects rows (``--all-parsed`` is the view ``parsed``)."""
    return "parsed" if args.all_parsed else args.view


def _view_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--view", default="kept", metavar="NAME",
                       help="the rows to take: a view of the run's config, kept (the filters' decision, the default), parsed, "
                       "or NAME='SQL condition' (e.g. strict='judge_p_yes >= 0.8')")
    group.add_argument("--all-parsed", action="store_true", help="every parsed row (the view parsed)")


def _verbose_flag(p: argparse.ArgumentParser) -> None:
    # Also after the subcommand; SUPPRESS keeps the global flag's value when this one is absent.
    p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help="show framework output on the console")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="genixer-ray",
        description="Generate visual instruction-tuning data with multimodal LLMs on Ray (the Genixer method).",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show Ray, vLLM and framework output on the console instead of in a log file"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_job_commands(sub)
    _add_reading_commands(sub)
    return parser


def _add_job_commands(sub) -> None:
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
        _verbose_flag(p)
        p.add_argument("config", nargs="?", help="run config YAML, a path or URL such as s3://... (default: the embedded demo run)")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config keys, e.g. sampling.temperature=0.2")
        if name == "show-config":
            p.add_argument("--kind", choices=("run", "filter", "train"), help="the kind of config (default: detected from its keys)")
        p.set_defaults(func=func)

    p = sub.add_parser("filter", help="score and select an existing run's rows (resumable); writes RUN/filtered/NAME")
    _verbose_flag(p)
    p.add_argument("run", help="the generation run's folder: {output.path}/{name}, local or s3://")
    p.add_argument("config", nargs="?", help="a filter pass config (configs/filter.yaml): filters, the judge, their engines")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config keys, e.g. engines.judge.model=DIR or filters.judge.policy=band")
    p.set_defaults(func=_cmd_filter)

    p = sub.add_parser("convert-checkpoint", help="convert an original-LLaVA checkpoint (e.g. Genixer-L) to the llava-hf layout vLLM loads")
    p.add_argument("src", help="the original checkpoint's directory (LlavaLlamaForCausalLM: config.json, weights, tokenizer)")
    p.add_argument("dst", help="the llava-hf directory to write")
    p.add_argument("--vision-tower", help="CLIP vision model directory or hub id (default: the config's mm_vision_tower)")
    p.set_defaults(func=_cmd_convert_checkpoint)


def _add_reading_commands(sub) -> None:
    """The commands that read finished runs: export, publish, report, verify, inspect."""
    p = sub.add_parser("export", help="write a run's kept rows as LLaVA conversation JSON or Shikra's JSON Lines (for training)")
    p.add_argument("run", help="a run's folder, or a filter pass's ({run}/filtered/{name})")
    p.add_argument("out", help="llava: the file to write, .json (one array) or .jsonl (one record per line); shikra: a folder; local or s3://")
    p.add_argument("--format", choices=("llava", "shikra"), default="llava",
                   help="llava: conversation JSON; shikra: the JSON Lines of Shikra's REC, GPT4Gen and PointQA datasets")
    p.add_argument("--image-root", help="the trainer's image folder: local images under it are written relative to it")
    p.add_argument("--copy-images", action="store_true",
                   help="copy every image beside the output (always done for remote and inline images)")
    _view_flags(p)
    p.add_argument("--storage-options", default="{}", help="fsspec options as JSON, for the run and the output")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("publish", help="write a run's kept rows as a dataset: datasets Parquet + card, WebDataset tars (resumable)")
    p.add_argument("run", help="a run's folder, or a filter pass's ({run}/filtered/{name}); local or s3://")
    p.add_argument("out", help="the folder to write (local or s3://); publishing again into it resumes")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="publish settings over the run's publish section, e.g. license=cc-by-4.0 or layouts=[datasets]")
    _view_flags(p)
    p.add_argument("--show", type=int, default=0, metavar="N", help="print the first N published rows")
    p.add_argument("--storage-options", default="{}", help="fsspec options as JSON, for the run, its images and the output")
    p.set_defaults(func=_cmd_publish)

    p = sub.add_parser("report", help="write one self-contained HTML page about a run or a filter pass")
    p.add_argument("run", help="a run's folder, or a filter pass's ({run}/filtered/{name}); local or s3://")
    p.add_argument("--out", help="the HTML file to write (default: RUN/report.html)")
    p.add_argument("--view", default="kept", metavar="NAME", help="the samples shown as selected: a view (default kept; see export --view)")
    p.add_argument("--storage-options", default="{}", help="fsspec options as JSON, for the run, its images and the output")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("verify", help="check every planned id is in exactly one committed row and every marker matches its shard "
                       "(of a published folder: every file against its marker and its run)")
    p.add_argument("run", help="a run's folder, a filter pass's, or a folder written by publish; local or s3://")
    p.add_argument("--storage-options", default="{}", help="fsspec options as JSON")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("inspect", help="rows, errors, tasks, shards and filter pass rates of a run or a filter pass")
    p.add_argument("run", help="a run's folder, or a filter pass's; local or s3://")
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    p.add_argument("--view", metavar="NAME", help="also count a view's rows per task (reads the shards; see export --view)")
    p.add_argument("--storage-options", default="{}", help="fsspec options as JSON")
    p.set_defaults(func=_cmd_inspect)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``genixer-ray`` console script."""
    args = build_parser().parse_args(argv)  # --help exits here, before anything heavier loads
    from genixer_ray.errors import GenixerError

    # `genixer-ray generate key=value` with no file: the first positional is an override.
    if getattr(args, "config", None) and "=" in args.config and not args.config.endswith((".yaml", ".yml")):
        args.overrides.insert(0, args.config)
        args.config = None
    # One mapping for every command: a user error exits 2, a failed run 1 (see genixer_ray.errors);
    # a store that cannot be read at all (OSError) is the user's to fix, like a missing run.
    try:
        return args.func(args)
    except (GenixerError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except _Failed as e:
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
