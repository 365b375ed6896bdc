"""The command line and the main job, run as a user runs them."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from genixer_ray.images import embedded_image_paths

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "genixer_ray.cli"]


def test_help_imports_no_heavy_library():
    code = (
        "import sys, contextlib, io\n"
        "from genixer_ray import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: cli.main(['--help'])\n"
        "    except SystemExit: pass\n"
        "print(json.dumps(sorted(m for m in ('torch','vllm','ray','transformers','polars','open_clip','pydantic') if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_bad_config_fails_before_work_naming_the_field(tmp_path):
    out = subprocess.run(
        CLI + ["generate", str(ROOT / "configs/demo.yaml"), "generator.backend=tensorrt", f"output.path={tmp_path}"],
        capture_output=True, text=True,
    )
    assert out.returncode == 2
    assert "generator.backend" in out.stderr and "'tensorrt'" in out.stderr
    assert not any(tmp_path.iterdir())  # nothing was started or written


@pytest.mark.vllm
def test_main_job_with_vllm(tmp_path):
    """`genixer-ray generate configs/demo.yaml`: the tiny generator on vLLM over the embedded photos."""
    out = subprocess.run(
        CLI + ["generate", str(ROOT / "configs/demo.yaml"), f"output.path={tmp_path}", "sampling.max_tokens=16"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[generate] 8/8 rows" in out.stderr
    assert f"to {tmp_path}/demo" in out.stdout
    table = pq.read_table(tmp_path / "demo" / "data")  # only shards live there, markers are JSON
    rows = table.to_pylist()
    assert sorted(r["image_id"] for r in rows) == sorted(embedded_image_paths())
    assert all(r["backend"] == "vllm" and 1 <= len(r["token_ids"]) <= 16 for r in rows)
    assert all(r["status"] == "ok" or r["error_stage"] == "parse" for r in rows)  # untrained: text may not parse
    assert len({r["seed"] for r in rows}) == len(rows)  # per-image seeds
