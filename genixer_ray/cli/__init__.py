"""The ``genixer-ray`` command line.

Heavy libraries (torch, vLLM, Ray) are imported inside the commands that use them, so
``genixer-ray --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys

from genixer_ray.cli.common import Failed
from genixer_ray.cli.jobs import add_job_commands
from genixer_ray.cli.reading import add_reading_commands


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
    add_job_commands(sub)
    add_reading_commands(sub)
    return parser


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
    except Failed as e:
        return e.exit_code


