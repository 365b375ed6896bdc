"""The command line and the main job, run as a user runs them."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from genixer_ray.config import load_config
from genixer_ray.images import embedded_image_paths
from genixer_ray.pipeline import run_generation

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


def test_folder_run_turns_bad_files_into_error_rows(tmp_path, tiny_models):
    src = tmp_path / "images"
    src.mkdir()
    photos = list(embedded_image_paths().values())[:3]
    for p in photos:
        (src / p.name).write_bytes(p.read_bytes())
    (src / "empty.jpg").write_bytes(b"")
    (src / "text.png").write_bytes(b"hello, not a png")
    good = photos[0].read_bytes()
    (src / "cut.png").write_bytes(good[: len(good) // 3])
    Image.new("L", (5000, 5000)).save(src / "huge.png")
    cfg = load_config(
        None,
        [f"input.source={src}", f"output.path={tmp_path / 'out'}", "name=folder", "generator.backend=transformers",
         "generator.dtype=float32", "generator.batch_size=3", "sampling.max_tokens=8", "input.max_pixels=20000000"],
    )
    summary = run_generation(cfg)
    table = pq.read_table(summary.output).to_pylist()
    by_id = {r["image_id"]: r for r in table}
    assert len(table) == len(by_id) == 7
    assert {k: by_id[k]["error_code"] for k in ("empty", "text", "cut", "huge")} == {
        "empty": "empty", "text": "not_an_image", "cut": "truncated", "huge": "too_large",
    }
    for p in photos:
        r = by_id[p.stem]
        assert r["status"] == "ok" and r["token_ids"] and r["backend"] == "transformers"
    assert summary.by_status == {"ok": 3, "error": 4}


@pytest.mark.vllm
def test_main_job_with_vllm(tmp_path):
    """`genixer-ray generate configs/demo.yaml`: the tiny generator on vLLM over the embedded photos."""
    out = subprocess.run(
        CLI + ["generate", str(ROOT / "configs/demo.yaml"), f"output.path={tmp_path}", "sampling.max_tokens=16"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[generate] 8/8 rows" in out.stderr
    table = pq.read_table(tmp_path / "demo" / "generations.parquet")
    rows = table.to_pylist()
    assert sorted(r["image_id"] for r in rows) == sorted(embedded_image_paths())
    assert all(r["status"] == "ok" and r["backend"] == "vllm" and 1 <= len(r["token_ids"]) <= 16 for r in rows)
    assert len({r["seed"] for r in rows}) == len(rows)  # per-image seeds
