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


@contextmanager
def routed_logging(progress: TextIO, retries: TextIO) -> Iterator[None]:
    """For the length of a command: the package's messages (``genixer_ray.*``: progress, counts)
    as plain lines on ``progress``, and the object-store clients' retry messages (nothing else of
    theirs) on ``retries``. The library logs; the command decides where that goes. On leaving,
    the loggers are as they were.
    """
    shown = logging.StreamHandler(progress)
    shown.setFormatter(logging.Formatter("%(message)s"))
    retried = logging.StreamHandler(retries)
    retried.setFormatter(logging.Formatter("%(asctime)s store retry (%(name)s): %(message)s"))
    retried.addFilter(lambda r: r.getMessage().startswith(RETRY_MESSAGES))
    # (logger, handler, level while routed); the package's lines do not also reach the root logger.
    routes = [(logging.getLogger("genixer_ray"), shown, logging.INFO)]
    routes += [(logging.getLogger(name), retried, logging.DEBUG) for name in RETRY_LOGGERS]
    before = [(lg.level, lg.propagate) for lg, _, _ in routes]
    for lg, handler, level in routes:
        lg.setLevel(level)
        lg.addHandler(handler)
    routes[0][0].propagate = False
    try:
        yield
    finally:
        for (lg, handler, _), (level, propagate) in zip(routes, before):
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate


@contextmanager
def console(command: str, *, verbose: bool) -> Iterator[Console]:
    """Run a command with framework output in ``$GENIXER_RAY_HOME/logs/{command}-{time}-{pid}.log``.

    Ray Data's progress bars are turned off (the command prints plain progress lines that read the
    same in a terminal and in ``ray job logs``). On leaving, the descriptors are restored.
    """
    if verbose:
        with routed_logging(sys.stderr, sys.stderr):
            yield Console(sys.stdout, sys.stderr, None)
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
    try:
        with routed_logging(err, sys.stderr):
            yield Console(out, err, str(path))
    finally:
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
