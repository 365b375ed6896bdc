"""`genixer-ray publish`: a run's kept rows as a `datasets` folder with a card and WebDataset tars.

The run is written by hand over the bundled photos (its rows' filter outcomes known), published,
and read back with the libraries its users read it with: `datasets.load_dataset`,
`huggingface_hub`'s card parser, `webdataset`, plain `tarfile`.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from genixer_ray.config import ConfigError, PublishConfig, build_config, redacted
from genixer_ray.filters.rules import Rule
from genixer_ray.images import decode_full, embedded_image_paths
from genixer_ray.inputs import iter_inputs
from genixer_ray.publish import publish_run
from genixer_ray.published_rows import stored_image
from genixer_ray.schema import to_frame
from genixer_ray.store import RunStore
from genixer_ray.verify import verify_published

# Generated text as hostile as a model can write it: markup, Markdown, control and bidi characters.
HOSTILE = "<script>alert('x')</script> **bold** | col | \x07\x1b[31m \u202eevil\u202c ```"


def made_run(url: str, *, keep: bool = True, storage_options: dict | None = None, changed: dict[str, dict] | None = None) -> str:
    """A run over the 8 photos in 2 shards: 6 kept samples (two of one image), a rejected one, an error row."""
    cfg = build_config(None, ["output.shard_size=4", "publish.license=cc-by-4.0", "publish.pretty_name=Planted"])
    store = RunStore(url, storage_options)
    store.write_plan(iter_inputs(cfg.input), shard_size=4, meta={"input": redacted(cfg.input)})
    store.write_config(redacted(cfg))
    plan = {r["image_id"]: r for k in range(2) for r in store.read_frame(store.plan_name(k)).to_dicts()}
    sizes = {k: decode_full(p.read_bytes()).size for k, p in embedded_image_paths().items()}

    def row(image_id, task, question, answer, sample=0, kept=keep, **fields):
        p = plan[image_id]
        return {"shard": p["shard"], "image_id": image_id, "sample": sample, "source": p["source"], "status": "ok", "text": "t",
                "parsed_task": task, "question": question, "answer": answer, "keep": kept, "seed": 3, "run_id": "r1",
                "generator": "/models/gen", "generator_hash": "aaaa", "judge_model": "/models/judge", "judge_hash": "bbbb",
                "judge_p_yes": 0.9, "clip_score": 0.3, "image_width": sizes[image_id][0], "image_height": sizes[image_id][1],
                "created_at": datetime(2026, 1, 2, tzinfo=UTC), "image_sha256": "ab" * 32, "phash": 2**63 + 5} | fields

    rows = [
        row("astronaut", "rec", "Where is the helmet?", "[0.30,0.05,0.70,0.45]", answer_boxes=[[0.3, 0.05, 0.7, 0.45]]),
        row("astronaut", "common_vqa", "What is she wearing?", HOSTILE, sample=1),
        row("camera", "reg", "What is in [0.20,0.10,0.60,0.50]?", "a camera", question_boxes=[[0.2, 0.1, 0.6, 0.5]]),
        row("coffee", "multi_choice_vqa", "What is it? (A) tea (B) coffee", "(B) coffee", options=["(A) tea", "(B) coffee"], answer_letter="B"),
        row("chelsea", "common_vqa", "What animal is this?", "a cat", kept=False, reject_reasons=["judge_below_threshold"]),
        row("motorcycle", "rec", "Where is the wheel?", "[0.10,0.50,0.50,0.90]", answer_boxes=[[0.1, 0.5, 0.5, 0.9]]),
        row("rocket", "common_vqa", HOSTILE, "a rocket"),
        {"shard": plan["retina"]["shard"], "image_id": "retina", "sample": 0, "source": plan["retina"]["source"], "status": "error",
         "error_code": "no_question_answer", "error_stage": "parse", "text": "gibberish"},
    ]
    rows = [r | (changed or {}).get(r["image_id"], {}) for r in rows]  # a test's own questions or scores for some images
    rules = [Rule("judge", "judge_p_yes", "top_fraction", fraction=0.5).as_dict()]
    for k in range(2):
        store.commit_shard(k, to_frame(sorted((r for r in rows if r["shard"] == k), key=lambda r: (r["image_id"], r["sample"]))),
                           {"by_status": {}, "by_error": {}, "by_task": {}, "rules": rules})
    return store.url


def _load(path: str, *args, **kw):
    import datasets

    return datasets.load_dataset(path, *args, split="train", **kw)


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_published_folder_loads_in_datasets_and_webdataset_with_a_valid_card(tmp_path):
    import webdataset as wds
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    run = made_run(str(tmp_path / "run"))
    out = tmp_path / "pub"
    r = publish_run(run, str(out), overrides=["shards_per_file=1", "webdataset_txt=true"])
    assert r["rows"] == 6 and r["by_task"] == {"rec": 2, "common_vqa": 2, "reg": 1, "multi_choice_vqa": 1} and r["parts"] == 2

    ds = _load(str(out), cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 6 and ds.features["image"].__class__.__name__ == "Image"
    assert {t: len(_load(str(out), t, cache_dir=str(tmp_path / "cache"))) for t in r["by_task"]} == r["by_task"]
    rows = {row["id"]: row for row in ds}
    assert set(rows) == {"astronaut", "astronaut#1", "camera", "coffee", "motorcycle", "rocket"}  # chelsea rejected, retina an error
    photos = embedded_image_paths()
    for row in rows.values():
        img = row["image"]
        assert img.size == (row["image_width"], row["image_height"])  # pixel boxes are in this image's pixels
        for norm, px in ((row["answer_boxes"], row["answer_boxes_px"]), (row["question_boxes"], row["question_boxes_px"])):
            for nb, pb in zip(norm or [], px or [], strict=True):
                assert pb == [round(v * (img.width if i % 2 == 0 else img.height)) for i, v in enumerate(nb)]
                # The box drawn back onto the stored image covers the source's own pixels there.
                source = decode_full(photos[row["image_id"]].read_bytes())
                assert np.array_equal(np.asarray(img.convert("RGB").crop(pb)), np.asarray(source.crop(pb)))
    assert rows["astronaut#1"]["answer"] == HOSTILE and rows["rocket"]["question"] == HOSTILE  # markup stays data
    assert rows["astronaut#1"]["conversations"][1] == {"from": "gpt", "value": HOSTILE}
    assert rows["coffee"]["options"] == ["(A) tea", "(B) coffee"] and rows["coffee"]["judge_p_yes"] == pytest.approx(0.9)
    assert rows["camera"]["judge_hash"] == "bbbb" and rows["camera"]["phash"] == 2**63 + 5
    assert rows["camera"]["created_at"].year == 2026

    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "cc-by-4.0" and card.data.pretty_name == "Planted" and card.data.size_categories == ["n<1K"]
    configs = MetadataConfigs.from_dataset_card_data(card.data)  # datasets' own validation of the configs
    assert set(configs) == {"default", *r["by_task"]}
    for needle in ("judge `top_fraction", "Not checked", "/models/gen", "`aaaa`", "load_dataset(", "wds.WebDataset(", "zhao2024genixer"):
        assert needle in card.text or needle in card.content, needle
    assert HOSTILE not in card.content  # no generated text in the card

    # WebDataset: the same samples and JSON, readable by the library and by plain tar.
    tars = sorted(str(p) for p in (out / "webdataset").glob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode("pil"))
    assert {s["json"]["id"] for s in samples} == set(rows)
    for s in samples:
        row = rows[s["json"]["id"]]
        image = s.get("png") or s.get("jpg")
        assert image.size == row["image"].size and s["json"]["answer"] == row["answer"] and s["json"]["answer_boxes_px"] == row["answer_boxes_px"]
        assert s["txt"] == f"{row['question']}\n{row['answer']}"
    with tarfile.open(tars[0]) as t:
        assert all("." in m.name and "/" not in m.name and m.isfile() for m in t.getmembers())

    verdict = verify_published(str(out))
    assert verdict.ok and verdict.rows == verdict.planned == 6, verdict.lines()


def test_publish_resumes_after_a_kill_and_verify_finds_what_is_not_its_own(tmp_path):
    run = made_run(str(tmp_path / "run"))
    out = tmp_path / "pub"
    publish_run(run, str(out), overrides=["shards_per_file=1"])
    first = _digests(out)
    # What a kill in part 1 leaves: a file cut short, no marker for the part, no card, no summary.
    cut = out / "webdataset/train-00001.tar"
    cut.write_bytes(cut.read_bytes()[:1000])
    for rel in ("_publish/part-00001.json", "_publish/publish.json", "README.md"):
        (out / rel).unlink()
    assert not verify_published(str(out)).ok
    again = publish_run(run, str(out), overrides=["shards_per_file=1"])
    assert again["parts_written"] == 1 and _digests(out) == first  # the same files, nothing doubled or partial
    assert verify_published(str(out)).ok

    # A part published with other options (one layout fewer) leaves none of the old files behind.
    narrower = publish_run(run, str(out), overrides=["shards_per_file=1", "layouts=[datasets]"])
    assert narrower["parts_written"] == 2 and not (out / "webdataset").exists() or not any((out / "webdataset").iterdir())
    # A copy beside a file and a foreign file are reported; publishing never removes them.
    (out / "data/rec/train-00000-copy.parquet").write_bytes((out / "data/rec/train-00000.parquet").read_bytes())
    (out / "notes.txt").write_text("mine")
    verdict = verify_published(str(out))
    assert verdict.counts["foreign_object"] == 2 and not verdict.ok
    publish_run(run, str(out), overrides=["shards_per_file=1", "layouts=[datasets]"])
    assert (out / "notes.txt").exists()


def test_publish_refuses_without_a_license_and_an_empty_run_publishes_an_empty_dataset(tmp_path):
    from huggingface_hub import DatasetCard

    run = made_run(str(tmp_path / "run"), keep=False)
    with pytest.raises(ConfigError, match="license is not set"):
        publish_run(run, str(tmp_path / "nolicense"), overrides=["license=null"])
    with pytest.raises(ConfigError, match="license"):
        publish_run(run, str(tmp_path / "bad"), overrides=["license=Apache 2.0"])
    r = publish_run(run, str(tmp_path / "pub"))
    assert r["rows"] == 0
    # datasets builds no split of zero rows ("corresponds to no data"); streamed, it is empty and typed.
    ds = _load(str(tmp_path / "pub"), streaming=True)
    assert list(ds) == [] and ds.features["image"].__class__.__name__ == "Image" and "judge_p_yes" in ds.features
    assert "This dataset has no rows" in DatasetCard.load(tmp_path / "pub" / "README.md").text
    assert verify_published(str(tmp_path / "pub")).ok


def test_publish_between_s3_stores_loads_with_datasets(s3, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # the loopback endpoint only: it is no hub

    so = s3["storage_options"]
    run = made_run(f"s3://{s3['bucket']}/publish/run", storage_options=so)
    out = f"s3://{s3['bucket']}/publish/out"
    r = publish_run(run, out, storage_options=so)
    ds = datasets.load_dataset("parquet", data_files=f"{out}/data/*/*.parquet", split="train", storage_options=copy.deepcopy(so),  # datasets adds keys to it
                               cache_dir=str(tmp_path / "cache"))
    assert len(ds) == r["rows"] == 6 and ds[0]["image"].size == (ds[0]["image_width"], ds[0]["image_height"])
    assert verify_published(out, storage_options=so).ok
    assert "key" not in json.dumps(RunStore(out, so).read_json("_publish/publish.json"))


def test_a_rotated_or_uncommon_image_is_stored_upright_as_png():
    from PIL import Image

    photo = decode_full(embedded_image_paths()["rocket"].read_bytes())
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", exif=exif.tobytes())
    data, ext = stored_image(buf.getvalue())
    upright = decode_full(buf.getvalue())
    assert ext == "png" and Image.open(io.BytesIO(data)).size == upright.size == photo.size[::-1]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), np.asarray(upright))
    bmp = io.BytesIO()
    photo.save(bmp, format="BMP")
    assert stored_image(bmp.getvalue())[1] == "png"
    plain = embedded_image_paths()["rocket"].read_bytes()
    assert stored_image(plain) == (plain, "jpg")  # an upright JPEG is stored as it came


def test_a_filter_pass_publishes_with_its_runs_license_and_its_own_settings(tmp_path):
    from genixer_ray.publish import publish_config

    run = RunStore(made_run(str(tmp_path / "run")))
    passed = RunStore(f"{run.url}/filtered/strict")
    for k in sorted(run.committed()):
        passed.commit_shard(k, run.read_frame(run.shard_name(k)), {"by_status": {}, "by_error": {}, "by_task": {}})
    passed.write_json("filter.json", {"filters": {}})
    passed.write_json("manifest.json", {"publish": redacted(PublishConfig(pretty_name="Strict"))})  # as a pass records it
    cfg = publish_config(passed, [])
    assert cfg.license == "cc-by-4.0" and cfg.pretty_name == "Strict"  # the run's license, the pass's name
    assert publish_config(passed, ["publish.license=mit"]).license == "mit"


def test_views_are_checked_when_the_config_loads_and_select_what_is_published(tmp_path):
    from genixer_ray.cli import main

    for views, message in [
        ({"strict": "judge_p_yes >="}, "view 'strict': cannot parse"),
        ({"strict": "judge_pyes >= 0.5"}, "view 'strict': no column judge_pyes"),
        ({"strict": "judge_p_yes + 1"}, "not a condition"),
        ({"kept": "true"}, "view 'kept' is built in"),
        ({"Bad-Name": "keep"}, "a name is lowercase"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_config({"views": views})
    run = made_run(str(tmp_path / "run"))
    store = RunStore(run)
    cfg = store.config() | {"views": {"grounded": "parsed_task in ('rec', 'reg') and judge_p_yes >= 0.5"}}
    store.write_config(cfg)  # as a run started with this view records it
    r = publish_run(run, str(tmp_path / "pub"), view="grounded")
    assert r["by_task"] == {"rec": 2, "reg": 1}
    assert "view grounded: `parsed_task in ('rec', 'reg') and judge_p_yes >= 0.5`" in (tmp_path / "pub" / "README.md").read_text()
    assert verify_published(str(tmp_path / "pub")).ok
    assert publish_run(run, str(tmp_path / "pub"), view="parsed")["rows"] == 7  # another view rewrites every part
    assert main(["export", run, str(tmp_path / "mc.json"), "--view", "mc=answer_letter = 'B'", "--copy-images"]) == 0
    assert [r["id"] for r in json.loads((tmp_path / "mc.json").read_text())] == ["coffee"]
    with pytest.raises(ConfigError, match="no such view.*known: grounded, kept, paper, parsed"):
        publish_run(run, str(tmp_path / "pub"), view="strict")
    # report and inspect take the same views.
    from genixer_ray.inspection import inspect_run
    from genixer_ray.report import write_report

    assert inspect_run(run, view="grounded")["view"] | {"condition": None} == {
        "name": "grounded", "condition": None, "rows": 3, "by_task": {"rec": 2, "reg": 1}}
    report = write_report(run, str(tmp_path / "r.html"), view="grounded")
    assert report["in_view"] == 3 and "in view grounded: parsed_task in (&#x27;rec&#x27;" in (tmp_path / "r.html").read_text()


def test_a_cluster_cap_publishes_the_best_of_each_question_cluster_and_the_card_counts_the_rest(tmp_path, capsys):
    """Three rec rows ask one question (two as written apart, one a near-duplicate): with a cap of 1 the best by the
    judge is published, the other two left out and counted on the card; without the cap every row comes back.
    ``export --cluster-cap`` leaves out the same rows."""
    from genixer_ray.cli import main

    changed = {"astronaut": {"question": "Where is the helmet?", "judge_p_yes": 0.6},
               "motorcycle": {"question": "WHERE is the helmet ?", "judge_p_yes": 0.95},
               "camera": {"parsed_task": "rec", "question": "Where is the helmets?", "judge_p_yes": None}}
    run = made_run(str(tmp_path / "run"), changed=changed)
    out = tmp_path / "pub"
    r = publish_run(run, str(out), overrides=["cluster_cap=1"])
    assert r["by_task"]["rec"] == 1 and r["left_out"] == 2 and r["rows"] == 4
    assert list(_load(str(out), "rec")["id"]) == ["motorcycle"]  # the highest judge_p_yes; the row without one ranks last
    card = (out / "README.md").read_text()
    assert "At most 1 sample(s) per near-duplicate question cluster" in card and "`judge_p_yes` first: 2 sample(s) of the view left out" in card
    assert verify_published(str(out)).ok
    r = publish_run(run, str(out))  # the cap removed: every part is written again
    assert r["by_task"]["rec"] == 3 and r["left_out"] == 0 and r["parts_written"] == r["parts"]
    with pytest.raises(ConfigError, match="cluster_cap"):
        publish_run(run, str(out), overrides=["cluster_cap=0"])
    exported = tmp_path / "llava.json"
    assert main(["export", run, str(exported), "--cluster-cap", "1"]) == 0
    assert "left out 2 rows beyond 1 per near-duplicate question cluster" in capsys.readouterr().out
    records = json.loads(exported.read_text())
    assert [r["id"] for r in records if r["task"] == "rec"] == ["motorcycle"] and len(records) == 4
    with pytest.raises(SystemExit):
        main(["export", run, str(exported), "--cluster-cap", "0"])
    assert "is not a whole number of at least 1" in capsys.readouterr().err
    assert main(["export", run, str(exported), "--cluster-cap", "1", "--cluster-score", "judge_pyes"]) != 0
    assert "--cluster-score: 'judge_pyes' is not one of judge_p_yes" in capsys.readouterr().err
