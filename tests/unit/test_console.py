"""Where library messages go while a command runs, and that nothing is left behind; no Ray."""

import io
import logging

from genixer_ray.console import routed_logging


def test_progress_and_store_retries_are_routed_then_restored():
    package, boto = logging.getLogger("genixer_ray.pipeline"), logging.getLogger("botocore.retryhandler")
    before = (logging.getLogger("genixer_ray").handlers[:], logging.getLogger("genixer_ray").propagate, boto.level)
    progress, retries = io.StringIO(), io.StringIO()
    for _ in range(2):  # a second command in the same process must not print lines twice
        with routed_logging(progress, retries):
            package.info("[plan] 4 images")
            boto.debug("Retry needed, action of: 0.5")
            boto.debug("No retry needed.")  # botocore's chatter: not kept
    assert progress.getvalue() == "[plan] 4 images\n" * 2
    assert retries.getvalue().count("store retry (botocore.retryhandler): Retry needed") == 2
    assert "No retry needed" not in retries.getvalue()
    root = logging.getLogger("genixer_ray")
    assert (root.handlers, root.propagate, boto.level) == before
