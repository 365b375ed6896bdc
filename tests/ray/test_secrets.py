"""No secret is written anywhere: a planted credential, then every byte the product wrote is scanned.

The same unique string is planted in every credential field of a generation, a filter pass, an
export, a report and a training run, all on the loopback S3 endpoint (which accepts any
credentials), and in a misspelt config key. Then every object in the bucket (Parquet decoded,
key-value metadata included), every command's console output and log file, the Ray session's
files (logs of every worker and actor) and the package's home are searched for it.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from genixer_ray.fixtures import resolve_fixture
from genixer_ray.images import embedded_image_paths
from genixer_ray.paths import genixer_home

pytestmark = pytest.mark.ray

SECRET = f"planted-{uuid.uuid4().hex}"
CLI = [sys.executable, "-m", "genixer_ray.cli"]


def planted(s3) -> dict:
    """fsspec options for the test endpoint whose every credential holds the planted string."""
    return {
        "key": f"{SECRET}-key", "secret": f"{SECRET}-secret", "token": f"{SECRET}-token",
        "client_kwargs": {"endpoint_url": s3["endpoint"], "region_name": "us-east-1"},
    }


def run(args: list[str], outputs: list[str], logs: list[Path]) -> subprocess.CompletedProcess:
    """Run the CLI; keep what it printed and the log file it named."""
    out = subprocess.run(CLI + args, capture_output=True, text=True, timeout=600)
    outputs.append(out.stdout + out.stderr)
    logs += [Path(p) for p in re.findall(r"framework output: (\S+\.log)", out.stderr)]
    return out


def texts_of_object(path: str, data: bytes) -> list[bytes]:
    """The bytes of an object, plus, for Parquet, its decoded rows and key-value metadata."""
    out = [data]
    if path.endswith(".parquet"):
        f = pq.ParquetFile(io.BytesIO(data))
        out.append(repr(f.schema_arrow.metadata).encode())
        out.append(repr(f.read().to_pylist()).encode(errors="replace"))
    return out


def local_files(root: Path, limit: int = 64 << 20):
    """Regular files under ``root`` (sockets, links and files over ``limit`` skipped)."""
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if p.is_file() and not p.is_symlink() and p.stat().st_size <= limit:
                yield p


def test_a_planted_secret_is_written_nowhere(ray_session, s3, tmp_path, tiny_models):
    direct = fsspec.filesystem("s3", **s3["storage_options"])
    root = f"{s3['bucket']}/secrets"
    entries = []
    for image_id, p in sorted(embedded_image_paths().items())[:8]:
        direct.pipe_file(f"{root}/in/{p.name}", p.read_bytes())
        entries.append({"image_id": image_id, "path": p.name})
    direct.pipe_file(f"{root}/in/manifest.jsonl", "\n".join(json.dumps(e) for e in entries).encode())
    # Training data on the endpoint too: the GQA practice questions and their images.
    direct.put(resolve_fixture("fixtures/practice/gqa_practice_questions.json"), f"{root}/gqa/questions.json")
    direct.put(resolve_fixture("fixtures/images/gqa/images") + "/", f"{root}/gqa/images/", recursive=True)

    so = json.dumps(planted(s3))
    address = ray_session.get_runtime_context().gcs_address
    outputs: list[str] = []
    logs: list[Path] = []
    fast = ["engines.generator.backend=transformers", "engines.generator.dtype=float32", "sampling.max_tokens=8", f"ray.address={address}"]
    run_url = f"s3://{root}/runs/secret-run"
    steps = [
        ["generate", f"input.source=s3://{root}/in/manifest.jsonl", f"input.storage_options={so}", f"output.path=s3://{root}/runs",
         f"output.storage_options={so}", "name=secret-run", "output.shard_size=4", "filters.clip.enabled=true",
         "filters.clip.model=tiny", *fast],
        ["filter", run_url, f"images.storage_options={so}", f"run.storage_options={so}", "filters.judge.enabled=true",
         "name=judged", f"ray.address={address}"],
        ["export", f"{run_url}/filtered/judged", f"s3://{root}/export/llava.json", "--all-parsed", f"--storage-options={so}"],
        ["report", f"{run_url}/filtered/judged", f"--storage-options={so}"],
        ["verify", run_url, f"--storage-options={so}"],
        ["publish", f"{run_url}/filtered/judged", f"s3://{root}/published", "license=cc-by-4.0", "--all-parsed", "--show=1",
         f"--storage-options={so}"],
        ["verify", f"s3://{root}/published", f"--storage-options={so}"],
        ["train", f"storage_path=s3://{root}/train", f"storage_options={so}", "name=secret-train", "optim.max_steps=2",
         "checkpoint_every=2", f"ray.address={address}",
         "data.sources=" + json.dumps([{"format": "gqa", "path": f"s3://{root}/gqa/questions.json",
                                        "image_root": f"s3://{root}/gqa/images", "storage_options": planted(s3)}])],
    ]
    for args in steps:
        out = run(args, outputs, logs)
        assert out.returncode == 0, (args[0], out.stdout, out.stderr)
    assert "missing" not in outputs[0] and "read_failed" not in outputs[0], outputs[0]  # images read with the options
    # A misspelt key holding credentials: the error names the field, not the secret.
    bad = run(["generate", f"output.storage_option={so}"], outputs, logs)
    assert bad.returncode == 2 and "output.storage_option" in bad.stderr

    found = []
    written = [p for p in direct.find(root) if not p.startswith((f"{root}/in/", f"{root}/gqa/"))]
    assert any(p.endswith("train_summary.json") for p in written) and any("/commits/" in p for p in written)
    assert any(p.endswith("filter.json") for p in written) and any(p.endswith("llava.json") for p in written)
    assert any(p.endswith("published/README.md") for p in written) and any(p.endswith("published/_publish/publish.json") for p in written)
    for p in written:
        if any(SECRET.encode() in t for t in texts_of_object(p, direct.cat_file(p))):
            found.append(f"s3://{p}")
    found += [f"console of {i}" for i, o in enumerate(outputs) if SECRET in o]
    assert len(logs) == 3, outputs  # generate, filter and train log their frameworks
    session = Path(ray_session._private.worker._global_node.get_session_dir_path())
    scanned = 0
    for folder in (session, genixer_home(), tmp_path, *{log.parent for log in logs}):
        for f in local_files(folder):
            scanned += 1
            if SECRET.encode() in f.read_bytes():
                found.append(str(f))
    assert scanned > 20 and len(written) > 20
    assert not found, f"the planted secret was written to: {sorted(set(found))}"
