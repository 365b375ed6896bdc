"""What the commands share: the console a job's command runs in, how a failed command exits, and
the options of the commands that read runs."""

from __future__ import annotations

import argparse
import traceback
from contextlib import contextmanager


@contextmanager
def framework_console(args: argparse.Namespace):
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
            raise Failed(e.exit_code) from None
        except Exception as e:
            traceback.print_exc()  # into the log file (or the terminal under --verbose)
            where = f"; traceback in {con.log_path}" if con.log_path else ""
            print(f"error: {type(e).__name__}: {e}{where}", file=con.err)
            raise Failed(1) from None


class Failed(Exception):
    """A command failed and has said why on its console; ``exit_code`` is its exit status."""

    def __init__(self, exit_code: int):
        super().__init__(exit_code)
        self.exit_code = exit_code


def storage_options(args: argparse.Namespace) -> dict:
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


def view(args: argparse.Namespace) -> str:
    """The ``--view`` of a command that selects rows (``--all-parsed`` is the view ``parsed``)."""
    return "parsed" if args.all_parsed else args.view


def view_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--view", default="kept", metavar="NAME",
                       help="the rows to take: a view of the run's config, kept (the filters' decision, the default), parsed, "
                       "or NAME='SQL condition' (e.g. strict='judge_p_yes >= 0.8')")
    group.add_argument("--all-parsed", action="store_true", help="every parsed row (the view parsed)")


def verbose_flag(p: argparse.ArgumentParser) -> None:
    # Also after the subcommand; SUPPRESS keeps the global flag's value when this one is absent.
    p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help="show framework output on the console")




def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number of at least 1."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return n
