"""Local multi-node Ray clusters for the cluster tests, started and stopped beside the tests' own
Ray session without touching it (``ray stop`` would stop every Ray on the machine)."""

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_ports() -> list[str]:
    """Free ports for a node's agents. Ray's defaults (52365 for the agent's HTTP server, among
    others) are taken by any other Ray on the machine (the tests' own session, the other node),
    and a head whose agent cannot bind refuses every job ("No available agent")."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]


def _processes(marks: tuple[str, ...]) -> set[psutil.Process]:
    """The cluster's processes: daemons naming one of ``marks`` in their command line, and their
    children (agents and workers rename themselves, so they are found through the process tree)."""
    found = set()
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if any(m in cmd for m in marks) and proc.pid != os.getpid():
            try:
                found.update([proc, *proc.children(recursive=True)])
            except psutil.Error:
                pass
    return found


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@contextlib.contextmanager
def local_ray_cluster(head: list[str], workers: list[list[str]] = (), env: dict | None = None, port: int | None = None):
    """A head started with ``ray start --head *head`` (its GCS on ``port``, else a free one) and one
    node per entry of ``workers``.

    Each worker node has a temp dir of its own, as a separate machine has its own disk: every node's
    runtime-env agent unpacks a job's working dir into its session folder on first use, deleting
    what is there (Ray's working_dir plugin always overwrites), so nodes sharing one folder delete
    the files under each other's running workers.

    Yields ``{"address": dashboard URL, "gcs": "127.0.0.1:PORT", "env": environment for the ray
    CLI, "temp_dir": the head's}``. On exit every process of the cluster is killed, and none may
    remain.
    """
    port, dash = port or free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="rj-", dir="/tmp")  # short: Ray's socket paths have a length limit
    worker_tmps = [tempfile.mkdtemp(prefix="rj-", dir="/tmp") for _ in workers]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})}
    gcs = f"127.0.0.1:{port}"
    try:
        subprocess.run(
            [RAY, "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={tmp}",
             "--disable-usage-stats", *agent_ports(), *head],
            env=env, check=True, capture_output=True,
        )
        for args, worker_tmp in zip(workers, worker_tmps):
            subprocess.run([RAY, "start", f"--address={gcs}", f"--temp-dir={worker_tmp}", "--disable-usage-stats", *agent_ports(), *args],
                           env=env, check=True, capture_output=True)
        yield {"address": f"http://127.0.0.1:{dash}", "gcs": gcs, "env": env, "temp_dir": tmp}
    finally:
        marks = (tmp, *worker_tmps, gcs)
        for proc in _processes(marks):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        deadline = time.monotonic() + 30
        while (left := [p for p in _processes(marks) if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, f"Ray processes left behind: {[' '.join(p.cmdline())[:120] for p in left]}"


def submit(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    """Run ``ray job submit``, retrying while the head's job agent is not ready.

    The dashboard agent can refuse jobs for a while on a loaded machine ("No available agent"),
    at start and again between jobs.
    """
    deadline = time.monotonic() + 120
    while True:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in res.stderr or time.monotonic() > deadline:
            return res
        time.sleep(3)


def job_cmd(cluster: dict, job: str, *args: str, wait: bool = True, submission_id: str | None = None, in_place: bool = False) -> list[str]:
    """``ray job submit`` of ``jobs/{job}.py ARGS`` to ``cluster``, the repository as working dir.

    Uploaded and unpacked on each node, as users submit; ``in_place``: used where it is
    (``local://``, code already on every node, as in an image built from ``cluster/Dockerfile``).
    """
    options = [*([] if wait else ["--no-wait"]), *([f"--submission-id={submission_id}"] if submission_id else [])]
    working_dir = f"local://{ROOT}" if in_place else str(ROOT)
    return [RAY, "job", "submit", "--address", cluster["address"], "--working-dir", working_dir, *options, "--",
            sys.executable, f"jobs/{job}.py", *args]
