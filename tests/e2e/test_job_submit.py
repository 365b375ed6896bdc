"""`ray job submit` of jobs/generate.py to a local two-node Ray cluster (head + a worker)."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from genixer_ray.store import RunStore

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
pytestmark = pytest.mark.cluster  # starts a two-node Ray cluster on this machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_ports() -> list[str]:
    """Free ports for a node's agents. Ray's defaults (52365 for the agent's HTTP server, among
    others) are taken by any other Ray on the machine (the tests' own session, the other node),
    and a head whose agent cannot bind refuses every job ("No available agent")."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]


@pytest.fixture
def local_cluster():
    """A head node and a worker node with a custom resource, stopped without touching other Ray instances."""
    port, dash = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="rj-", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    subprocess.run(
        [RAY, "start", "--head", f"--port={port}", "--num-cpus=2", '--resources={"head_node": 1}',
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={tmp}", "--disable-usage-stats", *agent_ports()],
        env=env, check=True, capture_output=True,
    )
    subprocess.run(
        [RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=2", '--resources={"gpu_like": 1}', "--disable-usage-stats",
         *agent_ports()],
        env=env, check=True, capture_output=True,
    )
    yield {"address": f"http://127.0.0.1:{dash}", "env": env}
    # The cluster's daemons name this temp dir or GCS port; their children (agents, workers)
    # rename themselves, so they are found through the process tree.
    marks = (tmp, f"127.0.0.1:{port}")
    victims = set()
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if any(m in cmd for m in marks) and proc.pid != os.getpid():
            try:
                victims.update([proc, *proc.children(recursive=True)])
            except psutil.Error:
                pass
    for proc in victims:
        try:
            proc.kill()
        except psutil.Error:
            pass


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


def test_job_submit_runs_generation_on_the_cluster(local_cluster, tmp_path, tiny_models):
    out = tmp_path / "out"
    cmd = [
        RAY, "job", "submit", "--address", local_cluster["address"], "--working-dir", str(ROOT), "--",
        sys.executable, "jobs/generate.py", "configs/demo.yaml", "scaling.ray_address=auto", "name=job",
        f"output.path={out}", "input.limit=3", "generator.model=tiny", "generator.backend=transformers", "sampling.max_tokens=8",
        "scaling.actor_resources={gpu_like: 1}",  # the generator actor must land on the worker node
    ]
    res = submit(cmd, local_cluster["env"])
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "succeeded" in (res.stdout + res.stderr).lower()
    store = RunStore(str(out / "job"))
    rows = store.read_rows()
    assert sorted(rows["image_id"].to_list()) == sorted(rows["image_id"].unique().to_list()) and rows.height == 3
    manifest = json.loads((out / "job" / "manifest.json").read_text())
    assert manifest["config"]["scaling"]["actor_resources"] == {"gpu_like": 1.0}

    # A separate filter pass over that run, submitted the same way.
    cmd = [
        RAY, "job", "submit", "--address", local_cluster["address"], "--working-dir", str(ROOT), "--",
        sys.executable, "jobs/filter.py", str(out / "job"), "configs/filter.yaml", "scaling.ray_address=auto",
        "filters.name=again", "filters.judge.threshold=0.5", "filters.consistency.max_tokens=8",
    ]
    res = submit(cmd, local_cluster["env"])
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    filtered = RunStore(str(out / "job" / "filtered" / "again")).read_rows()
    assert sorted(filtered["image_id"].to_list()) == sorted(rows["image_id"].to_list())
    assert set(filtered["judge_rule"].drop_nulls().to_list()) <= {"threshold>=0.5"}
    # The config names no judge and no engine: the run's own generator, as it was built, read from the run.
    engine = json.loads((out / "job" / "filtered" / "again" / "manifest.json").read_text())["engine"]
    assert engine == manifest["config"]["generator"] and engine["backend"] == "transformers"

    # The export and the report of the filter pass, as jobs too.
    passed = str(out / "job" / "filtered" / "again")
    for job, args, made in [
        ("export", [passed, str(out / "export.json"), "--all-parsed"], out / "export.json"),
        ("report", [passed, "--out", str(out / "report.html")], out / "report.html"),
    ]:
        cmd = [RAY, "job", "submit", "--address", local_cluster["address"], "--working-dir", str(ROOT), "--",
               sys.executable, f"jobs/{job}.py", *args]
        res = submit(cmd, local_cluster["env"])
        assert res.returncode == 0 and made.is_file(), (job, (res.stdout + res.stderr)[-4000:])
    assert isinstance(json.loads((out / "export.json").read_text()), list)
