"""What a person sees: the project's own lines on the console, framework chatter in a log file.

Ray, Ray Data, Ray Train, vLLM and transformers write to the process's stdout and stderr, from
Python and from native code (the raylet's C++ messages among them), so Python's logging alone
cannot route them. For the commands that start those frameworks, :func:`console` points file
descriptors 1 and 2 at a log file and gives the command streams on duplicates of the original
descriptors for its own lines. ``--verbose`` leaves the descriptors alone.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from genixer_ray.paths import genixer_home


@dataclass(frozen=True)
class Console:
    """Where the command's own lines go (``out``: results, ``err``: progress and errors), and the log."""

    out: TextIO
    err: TextIO
    log_path: str | None  # None when nothing is redirected (--verbose)


# Object-store clients log each retry at DEBUG, among much else: only the retries are kept.
RETRY_LOGGERS = ("botocore.retryhandler", "botocore.retries.standard", "s3fs")
RETRY_MESSAGES = ("Retry needed", "Retryable error", "Client error (maybe retryable)")


def log_store_retries(stream: TextIO) -> logging.Handler:
    """Write the object-store clients' retry messages (and nothing else of theirs) to ``stream``.

    A flaky store is survived by retrying; this makes each retry a line in the command's log.
    Returns the handler, so that a caller can remove it.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s store retry (%(name)s): %(message)s"))
    handler.addFilter(lambda r: r.getMessage().startswith(RETRY_MESSAGES))
    for name in RETRY_LOGGERS:
        lg = logging.getLogger(name)
        lg.setLevel(logging.DEBUG)
        lg.addHandler(handler)
    return handler


def show_progress(stream: TextIO) -> logging.Handler:
    """Show the package's messages (``genixer_ray.*`` loggers: progress, counts) on ``stream``, as plain lines.

    The library logs; the command decides where that goes. Returns the handler, to remove it.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    package = logging.getLogger("genixer_ray")
    package.setLevel(logging.INFO)
    package.addHandler(handler)
    package.propagate = False  # the command's own lines, not also the root logger's
    return handler


@contextmanager
def console(command: str, *, verbose: bool) -> Iterator[Console]:
    """Run a command with framework output in ``$GENIXER_RAY_HOME/logs/{command}-{time}-{pid}.log``.

    Ray Data's progress bars are turned off (the command prints plain progress lines that read the
    same in a terminal and in ``ray job logs``). On leaving, the descriptors are restored.
    """
    if verbose:
        log_store_retries(sys.stderr)
        handler = show_progress(sys.stderr)
        try:
            yield Console(sys.stdout, sys.stderr, None)
        finally:
            logging.getLogger("genixer_ray").removeHandler(handler)
        return
    logs = genixer_home() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{command}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}.log"
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    out, err = (os.fdopen(os.dup(s), "w", buffering=1) for s in saved)
    log_store_retries(sys.stderr)
    handler = show_progress(err)
    try:
        yield Console(out, err, str(path))
    finally:
        logging.getLogger("genixer_ray").removeHandler(handler)
        # Ray prints its workers' last lines while it shuts down: let that happen into the log.
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        for target, s in zip((1, 2), saved):
            os.dup2(s, target)
            os.close(s)
        out.close()
        err.close()
