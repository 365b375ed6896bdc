"""Filters through Ray Data: as stages of a generation run, and as a separate, resumable pass."""

import os
from collections import Counter, defaultdict

import pytest

from genixer_ray.config import ConfigError, FilterPassConfig, SamplingConfig, load_config, redacted
from genixer_ray.filter_pass import filter_url, run_filter
from genixer_ray.filters.consistency import reask_instruction
from genixer_ray.images import decode_image, embedded_image_paths
from genixer_ray.inputs import iter_inputs
from genixer_ray.pipeline import run_generation
from genixer_ray.schema import to_frame
from genixer_ray.store import RunStore

pytestmark = pytest.mark.ray

FAST = ["engines.generator.backend=transformers", "engines.generator.dtype=float32", "sampling.max_tokens=24"]
FILTERS = [
    "filters.clip.enabled=true", "filters.clip.threshold=-1", "filters.clip.min_box_side=0.05",
    "filters.judge.enabled=true", "filters.judge.policy=threshold", "filters.judge.threshold=0",
    "filters.consistency.enabled=true", "filters.consistency.samples=1", "filters.consistency.temperature=0",
    "filters.consistency.max_tokens=8", "filters.consistency.threshold=0.99",
    "filters.rating.enabled=true", "filters.rating.axes=[correctness,grounding]",
]


def test_filters_as_stages_of_a_generation_run(ray_session, tmp_path):
    """Two samples per image: both rows of every image pass the filter actors, whose blocks carry each image once."""
    cfg = load_config(None, [f"output.path={tmp_path}", "output.shard_size=4", "mode=agnostic", "samples_per_image=2", *FAST, *FILTERS])
    summary = run_generation(cfg)
    rows = RunStore(summary.output).read_rows().to_dicts()
    assert sorted((r["image_id"], r["sample"]) for r in rows) == sorted((i, k) for i in embedded_image_paths() for k in (0, 1))
    for r in rows:
        if r["status"] != "ok":
            assert r["keep"] is False and r["reject_reasons"] == [r["error_code"]] and r["judge_p_yes"] is None
            continue
        # Scored by all three filters, on the generator's engine (judge, consistency) and CLIP's actor.
        assert 0 <= r["judge_p_yes"] <= 1 and r["judge_rule"] == "threshold>=0.0" and r["judge_pass"] is True
        assert r["clip_pass"] is (r["clip_reason"] is None) and r["clip_threshold"] == -1
        assert r["keep"] is (not r["reject_reasons"])
        assert set(r["reject_reasons"]) <= {"box_outside_image", "box_too_small", "inconsistent", "answer_not_in_options"}
        # Rated on the generator's engine too: grounding only where the sample marks a region.
        assert 1 <= r["rating_correctness"] <= 5 and 0 < r["rating_correctness_confidence"] <= 1
        regions = r["question_boxes"] or r["answer_boxes"] or r["points"]
        assert (r["rating_grounding"] is not None) is bool(regions) and r["rating_prompt_version"].startswith("r2-")
    # The manifest's funnel is what the rows say.
    manifest = RunStore(summary.output).read_json("manifest.json")
    want: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        task = r["parsed_task"] or r["task"] or "unknown"
        want[task]["generated"] += r["text"] is not None
        want[task]["parsed"] += r["status"] == "ok"
        want[task]["kept"] += r["keep"]
    for task, steps in manifest["funnel"].items():
        assert {k: steps.get(k, 0) for k in ("generated", "parsed", "kept")} == dict(want[task])
        assert steps.get("parsed", 0) >= steps.get("clip", 0) >= steps.get("consistency", 0) >= steps.get("judge", 0) >= steps.get("kept", 0)
    assert manifest["kept"] == sum(r["keep"] for r in rows)


def constructed_run(url: str, generator, cfg, storage_options=None) -> str:
    """A generation run written by hand: rows whose filter outcomes are known, over the photos.

    Its plan and recorded config are a generation run's (``cfg``, a run config). With a
    ``generator``, the chelsea row's answer is the one it gives again (greedy)."""
    store = RunStore(url, storage_options)
    store.write_plan(iter_inputs(cfg.input), shard_size=4, meta={"input": redacted(cfg.input)})
    store.write_config(redacted(cfg))
    plan = {r["image_id"]: r for k in range(2) for r in store.read_frame(store.plan_name(k)).to_dicts()}

    def row(image_id, **fields):
        p = plan[image_id]
        base = {"shard": p["shard"], "image_id": image_id, "source": p["source"], "status": "ok", "text": "t", "seed": 3,
                "question": "What is shown?", "answer": "a photo", "parsed_task": "common_vqa"}
        return base | fields

    # The exact-match case: the answer is the one the generator gives again (greedy).
    cat = decode_image(embedded_image_paths()["chelsea"].read_bytes(), max_side=cfg.input.max_side)
    probe = row("chelsea", question="What animal is this?")
    from genixer_ray.engines.base import GenerationRequest

    greedy = "a cat"
    if generator is not None:
        greedy = generator.generate([GenerationRequest(cat, reask_instruction(probe), SamplingConfig(temperature=0, max_tokens=8))])[0].text
    rows = [
        row("astronaut", parsed_task="rec", question="Where is the helmet?", answer="[1.1,0.1,1.6,0.4]", answer_boxes=[[1.1, 0.1, 1.6, 0.4]]),
        row("camera", parsed_task="rec", question="Where is the lens?", answer="[0.50,0.50,0.51,0.70]", answer_boxes=[[0.5, 0.5, 0.51, 0.7]]),
        row("coffee", parsed_task="multi_choice_vqa", question="What is it? (A) tea (B) coffee (C) milk", answer="(D) juice",
            options=["(A) tea", "(B) coffee", "(C) milk"]),
        probe | {"answer": greedy},
        row("hubble_deep_field", answer="zzzz qqqq"),
        row("motorcycle", parsed_task="rec", question="Where is the wheel?", answer="[0.1,0.5,0.5,0.9]", answer_boxes=[[0.1, 0.5, 0.5, 0.9]]),
        {"shard": plan["retina"]["shard"], "image_id": "retina", "source": plan["retina"]["source"], "status": "error",
         "error_code": "no_question_answer", "error_stage": "parse", "text": "gibberish", "task": "rec"},
        row("rocket", parsed_task="reg", question="What is at [0.3,0.1,0.7,0.9]?", answer="a rocket", question_boxes=[[0.3, 0.1, 0.7, 0.9]]),
    ]
    for k in range(2):
        shard_rows = sorted((r for r in rows if r["shard"] == k), key=lambda r: r["image_id"])
        store.commit_shard(k, to_frame(shard_rows), {"by_status": {}, "by_error": {}, "by_task": {}})
    return store.url


def test_filter_pass_over_constructed_rows_resumes(ray_session, tmp_path):
    from genixer_ray.engines.base import get_generator

    gen_cfg = load_config(None, FAST)
    run = constructed_run(str(tmp_path / "constructed"), get_generator(gen_cfg.engines.generator), gen_cfg)
    # The judge and the re-answerer name no model: the pass reads the run's generator from the run.
    cfg = load_config(None, [*FILTERS, "name=strict"], kind=FilterPassConfig)
    summary = run_filter(run, cfg)
    out = RunStore(summary.output)
    assert summary.output == filter_url(run, cfg) and out.committed() == {0, 1}
    rows = {r["image_id"]: r for r in out.read_rows().to_dicts()}
    reasons = {k: r["reject_reasons"] for k, r in rows.items()}
    # Each filter's own reason, and the row's list of them (a row may fail several filters).
    assert rows["astronaut"]["clip_reason"] == "box_outside_image" and "box_outside_image" in reasons["astronaut"]
    assert rows["camera"]["clip_reason"] == "box_too_small" and "box_too_small" in reasons["camera"]
    assert rows["coffee"]["consistency_reason"] == "answer_not_in_options" and "answer_not_in_options" in reasons["coffee"]
    assert rows["chelsea"]["consistency_score"] == 1.0 and reasons["chelsea"] == [] and rows["chelsea"]["keep"] is True
    assert reasons["hubble_deep_field"] == ["inconsistent"] and rows["hubble_deep_field"]["consistency_score"] == 0.0
    assert reasons["retina"] == ["no_question_answer"] and rows["retina"]["keep"] is False
    assert rows["motorcycle"]["clip_score"] is not None and rows["rocket"]["clip_region_scores"]
    assert all(rows[k]["judge_p_yes"] is not None for k in rows if k != "retina")
    assert all(rows[k]["rating_correctness"] is not None for k in rows if k != "retina")  # rated in the pass as well
    assert rows["astronaut"]["rating_grounding"] is not None and rows["chelsea"]["rating_grounding"] is None
    manifest = out.read_json("manifest.json")
    assert manifest["kept"] == sum(r["keep"] for r in rows.values()) and manifest["source_run"] == run
    recorded = redacted(gen_cfg.engines.generator)  # every filter's engine: the run's generator, read from the run
    assert manifest["engines"] == {"consistency": recorded, "judge": recorded, "rating": recorded}
    assert rows["chelsea"]["judge_model"] == get_generator(gen_cfg.engines.generator).model_path

    # Resume: a shard whose commit marker is gone is filtered again; the other is left alone.
    kept_mtime = os.path.getmtime(out.path(out.shard_name(0)))
    os.remove(out.path(out.marker_name(1)))
    again = run_filter(run, cfg)
    assert again.skipped_shards == 1 and out.committed() == {0, 1}
    assert os.path.getmtime(out.path(out.shard_name(0))) == kept_mtime
    assert {r["image_id"]: r["reject_reasons"] for r in out.read_rows().to_dicts()} == reasons

    with pytest.raises(ConfigError, match="other settings"):
        run_filter(run, load_config(None, [*FILTERS, "name=strict", "filters.judge.threshold=0.5"], kind=FilterPassConfig))
    with pytest.raises(ConfigError, match="no generation run"):
        run_filter(str(tmp_path / "nothing"), cfg)
    os.remove(RunStore(run).path("run.json"))  # a run that records no generator: the judge must be named
    with pytest.raises(ConfigError, match="engines.judge.model is unset and the run at .* records no generator"):
        run_filter(run, load_config(None, [*FILTERS, "name=other"], kind=FilterPassConfig))


def test_clip_filter_pass_on_s3(ray_session, s3):
    """Runs and filter output on an S3 endpoint; a CLIP-only pass needs no generator engine."""
    import json

    import fsspec
    import pyarrow.parquet as pq

    so = s3["storage_options"]
    cfg = load_config(None, [
        f"run.storage_options={json.dumps(so)}", "filters.clip.enabled=true", "filters.clip.threshold=-1",
        "filters.clip.min_box_side=0.05", "name=clip-only",
    ], kind=FilterPassConfig)
    run = constructed_run(f"s3://{s3['bucket']}/constructed", None, load_config(None), so)
    summary = run_filter(run, cfg)
    assert summary.output == f"s3://{s3['bucket']}/constructed/filtered/clip-only"
    out = RunStore(summary.output, so)
    fs = fsspec.filesystem("s3", **so)
    rows = {r["image_id"]: r for r in pq.read_table([out.path(out.shard_name(k)) for k in (0, 1)], filesystem=fs).to_pylist()}
    assert len(rows) == 8
    assert rows["astronaut"]["reject_reasons"] == ["box_outside_image"]
    assert rows["camera"]["reject_reasons"] == ["box_too_small"]
    assert rows["motorcycle"]["keep"] is True and rows["motorcycle"]["clip_score"] is not None
    assert rows["coffee"]["keep"] is True and rows["coffee"]["judge_p_yes"] is None  # no judge in this pass
    assert out.read_json("manifest.json")["funnel"]["rec"] == {"rows": 4, "generated": 4, "parsed": 3, "clip": 1, "kept": 1}


def test_sample_dedup_pass_on_s3_resumes_with_nothing_doubled(ray_session, s3):
    """A pass with sample dedup alone (no model, no actor): near-duplicate samples of an image rejected, the best kept."""
    import json

    from genixer_ray.verify import verify_run

    so = s3["storage_options"]
    store = RunStore(f"s3://{s3['bucket']}/dedup-run", so)
    gen = load_config(None, ["output.shard_size=4", "samples_per_image=3"])
    store.write_plan(iter_inputs(gen.input), shard_size=4, meta={"input": redacted(gen.input), "samples_per_image": 3})
    store.write_config(redacted(gen))
    questions = ["What color is the car?", "What colour is the car?", "How many wheels are there?"]
    for k in range(2):
        rows = [{"shard": k, "image_id": r["image_id"], "sample": s, "source": r["source"], "status": "ok", "text": "t",
                 "parsed_task": "common_vqa", "question": questions[s], "answer": "red"}
                for r in store.read_frame(store.plan_name(k)).to_dicts() for s in range(3)]
        store.commit_shard(k, to_frame(rows), {"by_status": {}, "by_error": {}, "by_task": {}})
    cfg = load_config(None, [f"run.storage_options={json.dumps(so)}", "filters.dedup.enabled=true", "name=dedup"],
                      kind=FilterPassConfig)
    summary = run_filter(store.url, cfg)
    out = RunStore(summary.output, so)
    rows = out.read_rows().to_dicts()
    # A pass scores afresh: with dedup alone no row has a score, so the lower sample is kept (0 over 1).
    assert len(rows) == 24 and sum(r["keep"] for r in rows) == 16
    dropped = [r for r in rows if not r["keep"]]
    assert {r["sample"] for r in dropped} == {1} and all(r["duplicate_of"] == r["image_id"] for r in dropped)
    assert all(r["reject_reasons"] == ["duplicate_sample"] for r in dropped)
    assert out.read_json("manifest.json")["funnel"]["common_vqa"]["dedup"] == 16
    out.fs.rm(out.path(out.marker_name(1)))  # what a pass killed before shard 1's marker leaves
    again = run_filter(store.url, cfg)
    assert again.skipped_shards == 1 and len(out.read_rows()) == 24 and verify_run(out.url, storage_options=so).ok
