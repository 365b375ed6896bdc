"""The commands that read finished runs: export, publish, report, verify, inspect."""

from __future__ import annotations

import argparse
import sys

from genixer_ray.cli.common import positive_int, storage_options, view, view_flags


def _cmd_export(args: argparse.Namespace) -> int:
    from typing import get_args

    from genixer_ray.config import ConfigError
    from genixer_ray.config.filters import SampleScore
    from genixer_ray.export import export_llava
    from genixer_ray.export_shikra import export_shikra

    if args.cluster_score not in get_args(SampleScore):  # checked here: the parser imports no config (a fast --help)
        raise ConfigError(f"--cluster-score: {args.cluster_score!r} is not one of {', '.join(get_args(SampleScore))}")
    export = export_shikra if args.format == "shikra" else export_llava
    counts = export(
        args.run, args.out, storage_options=storage_options(args), image_root=args.image_root, view=view(args),
        copy_images=args.copy_images, cluster_cap=args.cluster_cap, cluster_score=args.cluster_score,
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
    if counts["left_out_by_cluster_cap"]:
        print(f"left out {counts['left_out_by_cluster_cap']} rows beyond {args.cluster_cap} per near-duplicate question cluster "
              f"(the highest {args.cluster_score} kept)")
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from genixer_ray.console import routed_logging
    from genixer_ray.publish import example_rows, publish_run

    command = " ".join(["genixer-ray publish", args.run, args.out, *args.overrides, f"--view={view(args)}"])
    with routed_logging(sys.stderr, sys.stderr):  # a progress line per part
        r = publish_run(args.run, args.out, overrides=args.overrides, storage_options=storage_options(args), view=view(args), command=command)
    tasks = ", ".join(f"{t}={n}" for t, n in sorted(r["by_task"].items())) or "none"
    print(f"published {r['rows']} rows ({tasks}) in {len(r['files'])} files to {r['output']} "
          f"({r['parts_written']} of {r['parts']} parts written now; the card: {r['output'].rstrip('/')}/README.md)")
    for row in example_rows(args.out, args.show, storage_options(args)):
        scores = ", ".join(f"{k}={row[k]:.3f}" for k in ("clip_score", "consistency_score", "judge_p_yes") if row[k] is not None)
        print(f"  [{row['task']}] {row['question']!r} -> {row['answer']!r}  image {row['image']}  {scores}")
    print(f'load it: datasets.load_dataset("{r["output"]}", split="train")   (or polars: pl.read_parquet("{r["output"].rstrip("/")}/data/*/*.parquet"))')
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from genixer_ray.report import write_report

    out = args.out or f"{args.run.rstrip('/')}/report.html"
    r = write_report(args.run, out, storage_options=storage_options(args), view=args.view)
    inside, outside = ("kept", "rejected") if args.view == "kept" else (f"in view {args.view.split('=', 1)[0]}", "other")
    print(f"report of {r['rows']} rows ({r['kept_shown']} {inside} and {r['rejected_shown']} {outside} samples shown): {r['output']}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from genixer_ray.inspection import format_inspection, inspect_run

    info = inspect_run(args.run, storage_options=storage_options(args), view=args.view)
    print(json.dumps(info, indent=2, sort_keys=True) if args.json else format_inspection(info))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from genixer_ray.publish import MARKERS
    from genixer_ray.store import RunStore
    from genixer_ray.verify import verify_published, verify_run

    so = storage_options(args)
    store = RunStore(args.run, so)
    published = store.fs.exists(store.path(MARKERS))
    verdict = (verify_published if published else verify_run)(args.run, storage_options=so)
    print("\n".join(verdict.lines()))
    return 0 if verdict.ok else 1


def add_reading_commands(sub) -> None:
    """The commands that read finished runs: export, publish, report, verify, inspect."""
    p = sub.add_parser("export", help="write a run's kept rows as LLaVA conversation JSON or Shikra's JSON Lines (for training)")
    p.add_argument("run", help="a run's folder, or a filter pass's ({run}/filtered/{name})")
    p.add_argument("out", help="llava: the file to write, .json (one array) or .jsonl (one record per line); shikra: a folder; local or s3://")
    p.add_argument("--format", choices=("llava", "shikra"), default="llava",
                   help="llava: conversation JSON; shikra: the JSON Lines of Shikra's REC, GPT4Gen and PointQA datasets")
    p.add_argument("--image-root", help="the trainer's image folder: local images under it are written relative to it")
    p.add_argument("--copy-images", action="store_true",
                   help="copy every image beside the output (always done for remote and inline images)")
    view_flags(p)
    p.add_argument("--cluster-cap", type=positive_int, metavar="N",
                   help="at most N rows per near-duplicate question cluster of a task (as publish.cluster_cap)")
    p.add_argument("--cluster-score", default="judge_p_yes", metavar="SCORE",
                   help="the score column that ranks a cluster's rows for --cluster-cap, highest first (as publish.cluster_score; "
                   "a row without it comes last)")
    p.add_argument("--storage-options", default="{}", help="fsspec options as JSON, for the run and the output")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("publish", help="write a run's kept rows as a dataset: datasets Parquet + card, WebDataset tars (resumable)")
    p.add_argument("run", help="a run's folder, or a filter pass's ({run}/filtered/{name}); local or s3://")
    p.add_argument("out", help="the folder to write (local or s3://); publishing again into it resumes")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="publish settings over the run's publish section, e.g. license=cc-by-4.0 or layouts=[datasets]")
    view_flags(p)
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


