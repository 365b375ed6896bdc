"""`ray job submit` of every job to a local two-node Ray cluster (head + a worker); stop and resume."""

import json
import os
import subprocess
import time
import uuid

import psutil
import pytest
from ray.job_submission import JobStatus, JobSubmissionClient
from ray_cluster import RAY, job_cmd, local_ray_cluster, submit

from genixer_ray.images import write_photo_manifest
from genixer_ray.schema import to_frame
from genixer_ray.store import RunStore

pytestmark = pytest.mark.cluster  # starts a two-node Ray cluster on this machine


@pytest.fixture
def local_cluster():
    """A head node and a worker node with a custom resource, stopped without touching other Ray instances."""
    with local_ray_cluster(["--num-cpus=2", '--resources={"head_node": 1}'], [["--num-cpus=2", '--resources={"gpu_like": 1}']]) as c:
        yield c


def actor_nodes(cluster: dict, actor_class: str) -> set[bool]:
    """For every actor of ``actor_class`` the cluster ran (alive or dead): whether it ran on the head."""
    from ray.util.state import list_actors, list_nodes

    head = {n.node_id for n in list_nodes(address=cluster["address"]) if n.is_head_node}
    actors = list_actors(address=cluster["address"], detail=True, limit=1000)
    return {a.node_id in head for a in actors if actor_class in a.class_name}


def test_every_job_runs_on_the_cluster(local_cluster, tmp_path, tiny_models):
    out = tmp_path / "out"
    run = str(out / "job")
    cmd = job_cmd(
        local_cluster, "generate", "configs/demo.yaml", "ray.address=auto", "name=job", f"output.path={out}", "input.limit=3",
        "engines.generator.model=tiny", "engines.generator.backend=transformers", "sampling.max_tokens=8",
        "pools.generator.actor_resources={gpu_like: 1}",  # the generator actors must land on the worker node
    )
    res = submit(cmd, local_cluster["env"])
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "succeeded" in (res.stdout + res.stderr).lower()
    rows = RunStore(run).read_rows()
    assert sorted(rows["image_id"].to_list()) == sorted(rows["image_id"].unique().to_list()) and rows.height == 3
    manifest = json.loads((out / "job" / "manifest.json").read_text())
    assert manifest["config"]["pools"]["generator"]["actor_resources"] == {"gpu_like": 1.0}
    # Placed by the custom resource: every generator actor ran on the second node, read from Ray's state.
    assert actor_nodes(local_cluster, "GeneratorActor") == {False}

    # A separate filter pass over that run, submitted the same way.
    cmd = job_cmd(
        local_cluster, "filter", run, "configs/filter.yaml", "ray.address=auto", "name=again",
        "filters.judge.threshold=0.5", "filters.consistency.max_tokens=8",
    )
    res = submit(cmd, local_cluster["env"])
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    filtered = RunStore(f"{run}/filtered/again").read_rows()
    assert sorted(filtered["image_id"].to_list()) == sorted(rows["image_id"].to_list())
    assert set(filtered["judge_rule"].drop_nulls().to_list()) <= {"threshold>=0.5"}
    # The config names no judge and no engine: the run's own generator, as it was built, read from the run.
    engines = json.loads((out / "job" / "filtered" / "again" / "manifest.json").read_text())["engines"]
    generator = manifest["config"]["engines"]["generator"]
    assert engines == {"judge": generator, "consistency": generator} and generator["backend"] == "transformers"

    # The export, the report and the publishing of the filter pass, as jobs too.
    passed = f"{run}/filtered/again"
    for job, args, made in [
        ("export", [passed, str(out / "export.json"), "--all-parsed"], out / "export.json"),
        ("report", [passed, "--out", str(out / "report.html")], out / "report.html"),
        ("publish", [passed, str(out / "dataset"), "license=cc-by-4.0", "--all-parsed"], out / "dataset" / "_publish" / "publish.json"),
    ]:
        res = submit(job_cmd(local_cluster, job, *args), local_cluster["env"])
        assert res.returncode == 0 and made.is_file(), (job, (res.stdout + res.stderr)[-4000:])
    assert isinstance(json.loads((out / "export.json").read_text()), list)

    # Fine-tuning, as a job: two Ray Train workers, placed by their custom resource on the second node.
    res = submit(job_cmd(
        local_cluster, "train_generator", "configs/train.yaml", "ray.address=auto", f"storage_path={out / 'train'}",
        "optim.max_steps=2", "checkpoint_every=2", "scaling.num_workers=2", "scaling.resources_per_worker={gpu_like: 0.5}",
    ), local_cluster["env"])
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    summary = json.loads((out / "train" / "genixer-tiny" / "train_summary.json").read_text())
    assert summary["steps"] == 2
    assert actor_nodes(local_cluster, "RayTrainWorker") == {False}


def wait_for_commit(store: RunStore, timeout: float = 420) -> None:
    """Return once ``store`` has a committed shard."""
    deadline = time.monotonic() + timeout
    while not store.committed():
        assert time.monotonic() < deadline, f"no shard committed at {store.url} in {timeout} s"
        time.sleep(0.2)


def stop_and_resume(cluster: dict, out: RunStore, job: str, *args: str) -> tuple[dict, list]:
    """Submit ``job``, ``ray job stop`` it after its first commit, check it stopped midway with no
    driver left, submit it again; return the marker mtimes from before and the re-run's result."""
    sid = f"{job}-{uuid.uuid4().hex[:8]}"
    res = submit(job_cmd(cluster, job, *args, wait=False, submission_id=sid), cluster["env"])
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    wait_for_commit(out)
    stop = subprocess.run([RAY, "job", "stop", "--address", cluster["address"], sid], env=cluster["env"], capture_output=True, text=True)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert JobSubmissionClient(cluster["address"]).get_job_status(sid) == JobStatus.STOPPED
    # The driver is gone (Ray Data's actors share its fate), and it stopped midway.
    deadline = time.monotonic() + 30
    while (drivers := [p for p in psutil.process_iter(["cmdline"]) if f"jobs/{job}.py" in " ".join(p.info["cmdline"] or [])]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not drivers, "the stopped job's driver is still running"
    before = {k: os.path.getmtime(out.path(out.shard_name(k))) for k in out.committed()}
    assert before
    res = submit(job_cmd(cluster, job, *args), cluster["env"])
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return before, res


def test_ray_job_stop_then_resubmit_resumes(local_cluster, tmp_path, tiny_models):
    """A generation and a filter pass, each stopped through the job API after its first commit and
    submitted again: committed shards are kept untouched and every id ends up exactly once."""
    from genixer_ray.verify import verify_run

    manifest = write_photo_manifest(tmp_path / "manifest.jsonl", 160)  # enough that a stop lands midway
    run = RunStore(str(tmp_path / "out" / "stopped"))
    before, res = stop_and_resume(
        local_cluster, run, "generate", "configs/demo.yaml", "ray.address=auto", "name=stopped",
        f"output.path={tmp_path / 'out'}", f"input.source={manifest}", "output.shard_size=4", "engines.generator.model=tiny",
        "engines.generator.backend=transformers", "pools.generator.batch_size=4", "pools.decode.batch_size=4",
    )
    planned = run.plan()["shards"]
    assert len(before) < planned, "the run finished before it was stopped: nothing tested"
    assert {k: os.path.getmtime(run.path(run.shard_name(k))) for k in before} == before  # committed shards untouched
    verdict = verify_run(run.url)
    assert verdict.ok and verdict.planned == verdict.rows == 160, verdict.problems
    assert f"({len(before)} already committed)" in res.stdout  # the re-run's own summary line

    # The untrained tiny generator parses nothing, and a pass skips error rows: give every row a
    # parsed question and answer so that the pass has scoring to do.
    for k in sorted(run.committed()):
        rows = [r | {"status": "ok", "error_code": None, "error_stage": None, "error_message": None, "parsed_task": "common_vqa",
                     "question": "What is shown?", "answer": "a photo"} for r in run.read_frame(run.shard_name(k)).to_dicts()]
        run.commit_shard(k, to_frame(rows), {})
    passed = RunStore(f"{run.url}/filtered/stopped")
    before, res = stop_and_resume(
        local_cluster, passed, "filter", run.url, "configs/filter.yaml", "ray.address=auto", "name=stopped",
        "pools.filters.batch_size=4", "filters.consistency.samples=4", "filters.consistency.max_tokens=96",
    )
    assert len(before) < planned, "the pass finished before it was stopped: nothing tested"
    assert {k: os.path.getmtime(passed.path(passed.shard_name(k))) for k in before} == before
    verdict = verify_run(passed.url)
    assert verdict.ok and verdict.planned == verdict.rows == 160, verdict.problems
    assert f"({len(before)} already committed)" in res.stdout
