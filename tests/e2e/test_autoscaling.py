"""Autoscaling for real on one machine: a generation submitted to a cluster that starts with the
head alone makes Ray's autoscaler launch worker nodes for the generator actors, and remove them
once idle. Node counts are read from Ray's state API."""

import json
import threading
import time
from pathlib import Path

import pytest
import yaml
from ray_cluster import free_port, job_cmd, local_ray_cluster, submit

from genixer_ray.verify import verify_run

pytestmark = pytest.mark.cluster

CONFIG = Path(__file__).parents[1] / "fixtures" / "autoscaling-cluster.yaml"


def alive_nodes(address: str) -> list:
    """The cluster's live nodes, from Ray's state API."""
    from ray.util.state import list_nodes

    return [n for n in list_nodes(address=address, detail=True, raise_on_missing_output=False) if n.state == "ALIVE"]


def test_generation_scales_worker_nodes_up_and_down(tmp_path, tiny_models):
    port = free_port()
    config = yaml.safe_load(CONFIG.read_text())
    config["provider"]["gcs_address"] = f"127.0.0.1:{port}"
    path = tmp_path / "autoscaling.json"
    path.write_text(json.dumps(config))
    env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    with local_ray_cluster(["--num-cpus=2", f"--autoscaling-config={path}"], env=env, port=port) as cluster:
        assert len(alive_nodes(cluster["address"])) == 1  # the head alone
        seen: list[list] = []
        done = threading.Event()

        def watch():
            while not done.is_set():
                seen.append(alive_nodes(cluster["address"]))
                time.sleep(1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            out = tmp_path / "out"
            res = submit(job_cmd(
                cluster, "generate", "configs/demo.yaml", "ray.address=auto", "name=scaled", f"output.path={out}",
                "input.limit=8", "output.shard_size=2", "engines.generator.model=tiny", "engines.generator.backend=transformers", "sampling.max_tokens=8",
                "filters.clip.enabled=false", "filters.judge.enabled=false", "filters.consistency.enabled=false",
                # Two generator actors, each needing the `generator` resource that only the worker node type has.
                "pools.generator.min_actors=2", "pools.generator.max_actors=2", "pools.generator.actor_resources={generator: 1}",
                # Ray's fake nodes share the head's session folder (the provider gives them no temp dir
                # of their own), and each node's agent deletes and unpacks an uploaded working dir
                # there on first use, under the other nodes' importing workers (a CI run failed so).
                in_place=True,
            ), cluster["env"])
            assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
            # Idle worker nodes are removed again.
            deadline = time.monotonic() + 180
            while len(alive_nodes(cluster["address"])) > 1:
                assert time.monotonic() < deadline, "idle worker nodes were not removed"
                time.sleep(2)
        finally:  # a failed assertion must not leave the watcher polling a stopped cluster
            done.set()
            watcher.join()

    most = max(seen, key=len)
    workers = [n for n in most if not n.is_head_node]
    assert len(most) == 3 and len(workers) == 2  # up to the configured maximum, no further
    assert all(n.resources_total.get("generator") == 1 for n in workers)
    verdict = verify_run(str(out / "scaled"))
    assert verdict.ok and verdict.planned == verdict.rows == 8, verdict.problems
