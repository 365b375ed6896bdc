"""Decontamination before generation in a real run on Ray: matched images never reach the generator."""

import base64
import glob
import io

import polars as pl
import pytest
from PIL import Image

from genixer_ray.config import load_config
from genixer_ray.decontam.index import EvalIndex
from genixer_ray.diversity import run_diversity
from genixer_ray.images import embedded_image_paths
from genixer_ray.inspection import inspect_run
from genixer_ray.pipeline import run_generation
from genixer_ray.report import write_report
from genixer_ray.verify import verify_run

pytestmark = pytest.mark.ray


def contamination_cards(run: str, out, storage_options: dict | None = None) -> list[str]:
    """The report's contamination section, a card per matched image (or question)."""
    write_report(run, str(out), storage_options=storage_options)
    page = out.read_text()
    section = page[page.index("<h2>Contamination</h2>") :]
    return section[: section.index("<h2>", 5)].split("<div class='card'>")[1:]


def test_contaminated_images_are_skipped_one_row_per_sample_and_never_generated(ray_session, tmp_path):
    photos = embedded_image_paths()
    requant = io.BytesIO()
    Image.open(photos["coffee"]).convert("RGB").save(requant, "JPEG", quality=35)  # a re-encoded copy of a crawl image
    rows = [("0", base64.b64encode(photos["chelsea"].read_bytes()).decode()), ("1", base64.b64encode(requant.getvalue()).decode())]
    tsv = tmp_path / "MMBench_DEV_EN.tsv"
    tsv.write_text('"index"\t"question"\t"image"\n' + "".join(f'"{i}"\t"What is it?"\t"{b}"\n' for i, b in rows))
    overrides = [
        f"output.path={tmp_path / 'out'}", "engines.generator.backend=transformers", "sampling.max_tokens=8", "samples_per_image=2",
        "decontamination.enabled=true",
        f"decontamination.sources=[{{benchmark: MMBench_DEV_EN, format: vlmevalkit_tsv, path: '{tsv}'}}]",
        # The embedding tier runs in the read tasks too (the tiny random CLIP; no cosine reaches 1.0, so no match of its own).
        "decontamination.embedding_model=tiny", "decontamination.embedding_threshold=1.0",
    ]
    summary = run_generation(load_config(None, overrides))
    (index_file,) = glob.glob(f"{summary.output}/decontam/index-*.npz")
    assert EvalIndex.from_bytes(open(index_file, "rb").read()).embeddings.shape[0] == 2  # built with the embeddings by its Ray task
    assert summary.by_status["skipped"] == 4 and sum(summary.by_status.values()) == 16, summary.by_status  # 8 photos x 2 samples
    out = pl.read_parquet(f"{summary.output}/data/*.parquet")
    skipped = out.filter(pl.col("status") == "skipped")
    assert sorted(skipped["image_id"].unique()) == ["chelsea", "coffee"] and sorted(skipped["sample"]) == [0, 0, 1, 1]
    assert set(skipped["error_code"]) == {"contaminated"} and set(skipped["contamination_benchmark"]) == {"MMBench_DEV_EN"}
    assert dict(zip(skipped["image_id"], skipped["contamination_tier"])) == {"chelsea": "bytes", "coffee": "perceptual"}
    # The generator's own record: a request it served has prompt tokens; the skipped rows have none, and no text.
    assert skipped["prompt_tokens"].null_count() == 4 and skipped["text"].null_count() == 4
    assert out.filter(pl.col("status") != "skipped")["prompt_tokens"].null_count() == 0
    assert verify_run(summary.output).ok
    info = inspect_run(summary.output)
    assert info["contamination"] == {"MMBench_DEV_EN/bytes": 2, "MMBench_DEV_EN/perceptual": 2} and info["by_error"]["contaminated"] == 4
    # The run's end measured its diversity (one Ray task): a figure per task that parsed.
    parsed = out.filter(pl.col("status") == "ok")
    assert set(info["diversity"]) == set(parsed["parsed_task"].unique()) and sum(d["samples"] for d in info["diversity"].values()) == parsed.height
    # Its questions were clustered on Ray Data: the same figures as one process computes from the rows.
    assert info["diversity"] == run_diversity(out.select("status", "parsed_task", "question", "answer", "answer_boxes"))
    # ... and wrote its fingerprint table: one row per image, as the rows carry them.
    table = pl.read_parquet(f"{summary.output}/fingerprints.parquet")
    assert table["image_id"].to_list() == sorted(photos) and table["phash"].null_count() == 0
    assert table.filter(pl.col("image_id") == "chelsea")["contamination_tier"].to_list() == ["bytes"]
    first = out.filter(pl.col("sample") == 0).sort("image_id")
    assert table.select("image_sha256", "phash").equals(first.select("image_sha256", "phash"))
    # The report shows each matched image beside the evaluation image, read back from the TSV.
    cards = contamination_cards(summary.output, tmp_path / "report.html")
    assert len(cards) == 2 and all(c.count("<img src='data:image/jpeg;base64,") == 2 for c in cards)
    assert any("chelsea" in c and "MMBench_DEV_EN item <code>0</code>" in c and "the same bytes" in c for c in cards)
    assert any("coffee" in c and "MMBench_DEV_EN item <code>1</code>" in c and "perceptual, distance" in c for c in cards)
    # A re-run of the finished run reuses the index and rewrites nothing.
    again = run_generation(load_config(None, overrides))
    assert again.skipped_shards == again.shards


def test_a_pass_over_a_run_made_without_it_marks_images_and_questions_on_s3(ray_session, s3, tmp_path):
    """The after-generation pass (the filter pass's machinery, no filter enabled): fingerprints
    added to every readable row, an evaluation image found again, a repeated evaluation question."""
    import json

    from test_filter_pipeline import constructed_run

    from genixer_ray.config import FilterPassConfig
    from genixer_ray.filter_pass import run_filter
    from genixer_ray.store import RunStore

    so = s3["storage_options"]
    copy = io.BytesIO()
    Image.open(embedded_image_paths()["rocket"]).convert("RGB").resize((320, 213)).save(copy, "JPEG", quality=40)
    tsv = tmp_path / "bench.tsv"
    tsv.write_text('"index"\t"question"\t"image"\n'
                   f'"1"\t"How tall is it?"\t"{base64.b64encode(copy.getvalue()).decode()}"\n'
                   '"2"\t"Where is the wheel?"\t"1"\n')
    run = constructed_run(f"s3://{s3['bucket']}/decon", None, load_config(None), so)
    cfg = load_config(None, [
        f"run.storage_options={json.dumps(so)}", "name=decon", "decontamination.enabled=true",
        f"decontamination.sources=[{{benchmark: bench, format: vlmevalkit_tsv, path: '{tsv}'}}]",
    ], kind=FilterPassConfig)
    summary = run_filter(run, cfg)
    rows = {r["image_id"]: r for r in RunStore(summary.output, so).read_rows().to_dicts()}
    assert (rows["rocket"]["contamination_tier"], rows["rocket"]["contamination_item"]) == ("perceptual", "1")
    assert (rows["motorcycle"]["contamination_tier"], rows["motorcycle"]["contamination_item"]) == ("question", "2")
    for name in ("rocket", "motorcycle"):
        assert rows[name]["keep"] is False and rows[name]["reject_reasons"] == ["contaminated"] and rows[name]["status"] == "ok"
    clean = [r for k, r in rows.items() if k not in ("rocket", "motorcycle")]
    assert all(r["contamination_tier"] is None for r in clean)
    assert all(r["image_sha256"] for r in rows.values() if r["status"] == "ok") and rows["retina"]["image_sha256"] is None
    assert inspect_run(summary.output, storage_options=so)["contamination"] == {"bench/perceptual": 1, "bench/question": 1}
    assert verify_run(summary.output, storage_options=so).ok
    # Killed before shard 0's marker (what a kill leaves: the shard file, no marker): the re-run
    # redoes that shard alone, reuses the index, and every row is there once, matched the same.
    out = RunStore(summary.output, so)
    index_files = {f: out.fs.info(f)["LastModified"] for f in out.fs.find(out.path("decontam"))}
    out.fs.rm(out.path(out.marker_name(0)))
    again = run_filter(run, cfg)
    assert again.skipped_shards == again.shards - 1 and verify_run(summary.output, storage_options=so).ok
    assert {r["image_id"]: r["contamination_tier"] for r in out.read_rows().to_dicts()} == {k: r["contamination_tier"] for k, r in rows.items()}
    assert {f: out.fs.info(f)["LastModified"] for f in out.fs.find(out.path("decontam"))} == index_files  # not built again
    cards = contamination_cards(summary.output, tmp_path / "report.html", so)
    (image,) = [c for c in cards if "rocket" in c]
    assert image.count("<img src='data:image/jpeg;base64,") == 2 and "bench item <code>1</code>" in image
    (question,) = [c for c in cards if "motorcycle" in c]
    assert "question: the question repeats" in question and "bench item <code>2</code>" in question
    tsv.unlink()  # the evaluation set moved: the card says why, the report is still written
    (image,) = [c for c in contamination_cards(summary.output, tmp_path / "report2.html", so) if "rocket" in c]
    assert image.count("<img src='data:image/jpeg;base64,") == 1 and "class='noimg'" in image and "bench.tsv" in image
