"""The run report and inspect, on a real small run written to S3, rendered in headless Chromium."""

import json
import os
import re
import shutil
import subprocess
import sys

import polars as pl
import pytest
from PIL import Image

from genixer_ray.config import FilterPassConfig, load_config
from genixer_ray.filter_pass import run_filter
from genixer_ray.inspection import inspect_run
from genixer_ray.pipeline import run_generation
from genixer_ray.report import write_report
from genixer_ray.store import RunStore
from genixer_ray.verify import verify_run

pytestmark = pytest.mark.ray

PLANTED_Q = '<b id="planted">bold?</b>'
PLANTED_A = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (tools/setup.sh installs Debian's chromium package)")
        pytest.skip("Debian's chromium is not installed")
    return exe


def render(url: str, *args: str) -> subprocess.CompletedProcess:
    """Load ``url`` in headless Chromium; stderr carries the page's console messages."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--log-level=0", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line or "Refused to" in line]


def test_report_of_a_real_run_renders_escapes_and_inspects(ray_session, s3, tmp_path, tiny_models):
    so = s3["storage_options"]
    cfg = load_config(None, [
        "name=reported", f"output.path=s3://{s3['bucket']}/runs", f"output.storage_options={json.dumps(so)}",
        "engines.generator.backend=transformers", "engines.generator.dtype=float32", "sampling.max_tokens=24", "output.shard_size=4",
        "task_mix={rec: 1, common_vqa: 1}", "filters.clip.enabled=true", "filters.clip.model=tiny",
        # The report draws the rules the markers record, as data: CLIP's 0.2 and the band's two edges.
        "filters.judge.enabled=true", "filters.judge.policy=band",
    ])
    summary = run_generation(cfg)
    run = summary.output
    assert verify_run(run, storage_options=so).ok  # every planned id once, markers match (on S3)
    store = RunStore(run, so)
    # The untrained tiny generator's text rarely parses: make two rows of shard 0 parsed pairs, one
    # with markup in its question and answer, as a hostile model output would be.
    shard = store.read_frame(store.shard_name(0))
    rows = shard.to_dicts()
    rows[0] |= {"status": "ok", "error_code": None, "parsed_task": "rec", "question": PLANTED_Q, "answer": PLANTED_A,
                "answer_boxes": [[0.1, 0.2, 0.6, 0.9]], "keep": True, "reject_reasons": [], "turns": None,
                "clip_score": 0.31, "clip_threshold": 0.0, "clip_rule": "cosine>=0", "judge_p_yes": 0.62,
                "judge_rule": "band[0.5,0.7]"}
    rows[1] |= {"status": "ok", "error_code": None, "parsed_task": "common_vqa", "question": "What is this?", "answer": "a photo",
                "keep": False, "reject_reasons": ["clip_below_threshold"], "turns": None,
                "clip_score": -0.05, "clip_threshold": 0.0, "clip_rule": "cosine>=0", "judge_p_yes": 0.91,
                "judge_rule": "band[0.5,0.7]"}
    store.write_frame(store.shard_name(0), pl.DataFrame(rows, schema=shard.schema))

    info = inspect_run(run, storage_options=so)
    assert info["kind"] == "generation run" and info["rows"] == 8 and info["shards"] == {"planned": 2, "committed": 2, "pending": 0}
    assert sum(info["by_status"].values()) == 8 and sum(c["rows"] for c in info["funnel"].values()) == 8  # from the markers
    assert set(info["pass_rates"]) == {"clip", "judge"} and info["config_digest"].startswith("sha256:")
    assert {(r["filter"], r["policy"], r["low"], r["high"]) for r in info["rules"]} == {("clip", "threshold", 0.2, None), ("judge", "band", 0.5, 0.7)}

    out = tmp_path / "report.html"
    r = write_report(run, str(out), storage_options=so)
    assert r["rows"] == 8 and r["kept_shown"] >= 1 and r["rejected_shown"] >= 1
    page = out.read_text()
    assert PLANTED_Q not in page and PLANTED_A not in page  # never raw
    assert "&lt;b id=&quot;planted&quot;&gt;bold?&lt;/b&gt;" in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # self-contained: nothing fetched
    assert page.count("data:image/jpeg;base64,") >= 2 and "<svg" in page
    assert page.count("stroke-dasharray") >= 3  # the clip threshold and the judge's band edges are drawn

    # The harness sees script errors: a page with one shows it on the console.
    probe = tmp_path / "probe.html"
    probe.write_text("<html><body><script>throw new Error('probe-error')</script></body></html>")
    assert any("probe-error" in line for line in console_errors(render(probe.as_uri(), "--dump-dom").stderr))

    dom = render(out.as_uri(), "--dump-dom")
    assert dom.returncode == 0 and not console_errors(dom.stderr), console_errors(dom.stderr)
    assert '<b id="planted">' not in dom.stdout and "&lt;b id=\"planted\"&gt;" in dom.stdout  # text, not an element
    assert "<title>genixer-ray report: reported</title>" in dom.stdout  # no script changed the title
    shot = tmp_path / "report.png"
    render(out.as_uri(), f"--screenshot={shot}", "--window-size=1280,1600")
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 1600)
    assert len(img.getcolors(maxcolors=1 << 20) or []) > 500  # photos and charts, not a blank page

    # A filter pass over the same run: its own report and inspection.
    fcfg = load_config(None, [
        f"run.storage_options={json.dumps(so)}", "name=clip-only", "filters.clip.enabled=true",
        "filters.clip.model=tiny", "filters.clip.threshold=0.9",
    ], kind=FilterPassConfig)
    passed = run_filter(run, fcfg)
    verdict = verify_run(passed.output, storage_options=so)
    assert verdict.kind == "filter pass" and verdict.ok and verdict.planned == verdict.rows == 8
    finfo = inspect_run(passed.output, storage_options=so)
    assert finfo["kind"] == "filter pass" and finfo["shards"]["committed"] == 2 and finfo["shards"]["pending"] == 0
    assert list(finfo["pass_rates"]) == ["clip"]
    fout = f"s3://{s3['bucket']}/reports/clip-only.html"
    assert subprocess.run(
        [sys.executable, "-m", "genixer_ray.cli", "report", passed.output, "--out", fout, "--storage-options", json.dumps(so)],
        capture_output=True, text=True, timeout=300,
    ).returncode == 0
    import fsspec

    with fsspec.open(fout, "r", **so) as f:
        assert "filter pass" in f.read()
    cli = subprocess.run([sys.executable, "-m", "genixer_ray.cli", "inspect", passed.output, "--json", "--storage-options", json.dumps(so)],
                         capture_output=True, text=True, timeout=120)
    assert json.loads(cli.stdout)["kind"] == "filter pass"
