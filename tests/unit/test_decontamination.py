"""Evaluation sets in their published shapes, the index, and the contamination stage; no Ray."""

import base64
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageEnhance, ImageOps

from genixer_ray.annotations import SourceStats
from genixer_ray.config import ConfigError, DecontaminationConfig, EvalSource, InputConfig, build_config
from genixer_ray.decontam.evalsets import iter_eval_records
from genixer_ray.decontam.index import EvalIndex, build_index
from genixer_ray.errors import UserError
from genixer_ray.fingerprints import crop_margin
from genixer_ray.images import embedded_image_paths
from genixer_ray.stages import row_image
from genixer_ray.stages.decode import DecodeStage

PHOTOS = embedded_image_paths()


def jpeg(name: str, quality: int = 92, edit=None) -> bytes:
    img = Image.open(PHOTOS[name]).convert("RGB")
    img = edit(img) if edit else img
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_tsv(path, rows: list[dict]) -> str:
    """A TSV as VLMEvalKit writes its benchmark files (pandas to_csv, sep='\\t', every field quoted)."""
    cols = list(rows[0])
    quote = lambda v: '"' + str(v).replace('"', '""') + '"'  # noqa: E731 - csv.QUOTE_ALL
    path.write_text("\n".join(["\t".join(map(quote, cols))] + ["\t".join(quote(r[c]) for c in cols) for r in rows]) + "\n")
    return str(path)


def read(src: dict) -> tuple[dict, SourceStats]:
    """The images of an evaluation set by item id (and the reader's counts)."""
    stats = SourceStats("t")
    return {r.item: r.data for r in iter_eval_records(EvalSource.model_validate(src), stats) if r.data is not None}, stats


def test_a_vlmevalkit_tsv_with_shared_images_multi_image_rows_and_bad_records(tmp_path):
    """MMBench's shape: index, question, hint, options, answer, category, image; a row whose image
    is another row's index shares it (VLMEvalKit's image_base.py), and a list literal is several images."""
    chelsea, coffee, rocket = jpeg("chelsea"), jpeg("coffee"), jpeg("rocket")
    base = {"question": 'What is "this"?\tReally', "hint": "nan", "A": "a cat", "B": "a dog", "answer": "A", "category": "x"}
    tsv = write_tsv(tmp_path / "MMBench_DEV_EN.tsv", [
        {"index": 0, **base, "image": b64(chelsea)},
        {"index": 1, **base, "image": "0"},  # the same image as index 0
        {"index": 2, **base, "image": str([b64(coffee), b64(rocket)])},
        {"index": 3, **base, "image": "!!not base64!!" * 10},
        {"index": 4, **base, "image": "99"},  # refers to no row
    ])
    images, stats = read({"benchmark": "MMBench_DEV_EN", "format": "vlmevalkit_tsv", "path": tsv})
    assert images == {"0": chelsea, "2": coffee, "2#1": rocket}
    assert dict(stats.skipped) == {"bad_base64": 1, "bad_reference": 1} and stats.records == 5


def test_a_truncated_or_foreign_tsv_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "cut.tsv").write_text('"index"\t"image"\n"0"\t"abc')  # cut inside a quoted field
    with pytest.raises(UserError, match="cut.tsv"):
        read({"benchmark": "b", "format": "vlmevalkit_tsv", "path": str(tmp_path / "cut.tsv")})
    (tmp_path / "other.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(UserError, match="other.tsv has no index and image"):
        read({"benchmark": "b", "format": "vlmevalkit_tsv", "path": str(tmp_path / "other.tsv")})


def test_parquet_with_image_structs_as_datasets_writes_them(tmp_path):
    """The `datasets` Image feature: a struct of bytes and path; a null bytes field names a file."""
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "rocket.jpg").write_bytes(rocket := jpeg("rocket"))
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "question_id": ["q1", "q2", "q3"],
        "image": pa.array([{"bytes": jpeg("coffee"), "path": None}, {"bytes": None, "path": "rocket.jpg"},
                           {"bytes": None, "path": None}], type=image),
    })
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "test-00000-of-00001.parquet")
    images, stats = read({"benchmark": "POPE", "format": "parquet", "path": str(tmp_path / "data"), "image_root": str(tmp_path / "img")})
    assert images == {"q1": jpeg("coffee"), "q2": rocket} and dict(stats.skipped) == {"no_image": 1}


def test_refer_test_splits_and_image_folders(tmp_path):
    """RefCOCO's testA split holds COCO train2014 images: read from the refer release as training reads it."""
    images, _ = read({"benchmark": "RefCOCO_testA", "format": "refer", "splits": ["testA"],
                      "files": {"refs": "fixtures/refcoco/refs(unc).p", "instances": "fixtures/refcoco/instances.json"},
                      "image_root": "fixtures/images/coco/train2014"})
    assert len(images) == 1  # the fixture's one testA expression, its image once
    (tmp_path / "a.jpg").write_bytes(jpeg("camera"))
    folder, _ = read({"benchmark": "mine", "format": "images", "path": str(tmp_path)})
    assert list(folder) == ["a.jpg"]  # the image id a run would give it


def test_a_vqav2_test_dev_questions_file_alone(tmp_path):
    """test-dev2015 as VQA publishes it (questions, no annotations); its images are test2015's files."""
    root = tmp_path / "test2015"
    root.mkdir()
    (root / "COCO_test2015_000000000001.jpg").write_bytes(jpeg("chelsea"))
    questions = {"info": {"description": "This is v2.0 of the VQA dataset.", "version": "2.0"}, "task_type": "Open-Ended",
                 "data_type": "mscoco", "license": {"name": "Creative Commons Attribution 4.0 International License"},
                 "data_subtype": "test-dev2015",
                 "questions": [{"image_id": 1, "question": "What is the cat doing?", "question_id": 1000},
                               {"image_id": 1, "question": "Is it indoors?", "question_id": 1001},
                               {"image_id": 2, "question": "Where is it?", "question_id": 2000},  # no such image file
                               {"image_id": "3", "question": "Bad id?", "question_id": 3000}, "not a question"]}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    src = EvalSource(benchmark="VQAv2_testdev", format="vqav2", files={"questions": str(tmp_path / "q.json")}, image_root=str(root))
    stats = SourceStats("t")
    records = list(iter_eval_records(src, stats))
    assert [(r.item, r.data is not None, r.questions) for r in records] == [
        ("1000", True, ("What is the cat doing?",)), ("1001", False, ("Is it indoors?",))]
    assert dict(stats.skipped) == {"missing": 1, "bad_image_id": 1, "bad_record": 1}
    with pytest.raises(ConfigError, match="needs image_root"):
        build_config({"decontamination": {"sources": [{"benchmark": "v", "format": "vqav2", "files": {"questions": "q.json"}}]}})
    (tmp_path / "bad.json").write_text(json.dumps({"questions": []}))
    with pytest.raises(UserError, match="bad.json names no data_subtype"):
        list(iter_eval_records(src.model_copy(update={"files": {"questions": str(tmp_path / "bad.json")}}), stats))


def test_bad_sources_fail_at_config_load_naming_the_field():
    with pytest.raises(ConfigError, match="decontamination.*needs image_root"):
        build_config({"decontamination": {"sources": [{"benchmark": "r", "format": "gqa", "path": "x.json"}]}})
    with pytest.raises(ConfigError, match="enabled needs at least one evaluation set"):
        build_config({"decontamination": {"enabled": True}})
    with pytest.raises(ConfigError, match="benchmark"):
        build_config({"decontamination": {"sources": [{"benchmark": "a/b", "format": "images", "path": "x"}]}})


def decoded(data: bytes, image_id: str) -> dict:
    (row,) = DecodeStage(InputConfig())([{"shard": 0, "image_id": image_id, "source": f"inline:{image_id}", "data": data}])
    return row


def test_the_index_matches_each_tier_and_nothing_else(tmp_path):
    chelsea, coffee = jpeg("chelsea"), jpeg("coffee")
    tsv = write_tsv(tmp_path / "b.tsv", [{"index": 7, "image": b64(chelsea)}, {"index": 8, "image": b64(coffee)},
                                         {"index": 9, "image": b64(b"GIF89a" + bytes(100))}])  # over 64 characters: bytes, not a reference
    cfg = DecontaminationConfig(enabled=True, sources=[EvalSource(benchmark="bench", format="vlmevalkit_tsv", path=tsv)])
    index, counts = build_index(cfg)
    assert len(index) == 2 and counts["sources"][0]["skipped"] == {"not_an_image": 1}
    index = EvalIndex.from_bytes(index.to_bytes())  # as the read tasks load it
    png = io.BytesIO()
    Image.open(io.BytesIO(chelsea)).save(png, "PNG")
    brighter = jpeg("coffee", quality=40, edit=lambda im: ImageEnhance.Brightness(im).enhance(1.15))
    images = {"same": chelsea, "png": png.getvalue(), "edited": brighter, "other": jpeg("rocket"),
              "flipped": jpeg("coffee", quality=60, edit=ImageOps.mirror)}
    found = dict(zip(images, index.match_images([decoded(d, k) for k, d in images.items()], 8), strict=True))
    assert (found["same"].tier, found["same"].item, found["same"].benchmark) == ("bytes", "7", "bench")
    assert found["png"].tier == "pixels" and found["png"].item == "7"
    assert found["edited"].tier == "perceptual" and found["edited"].item == "8" and found["edited"].distance <= 8
    assert found["other"] is None and found["flipped"] is None  # a flip moves the hashes far
    mirrored = EvalIndex.from_bytes(build_index(cfg.model_copy(update={"mirrored": True}))[0].to_bytes())
    again = dict(zip(images, mirrored.match_images([decoded(d, k) for k, d in images.items()], 8), strict=True))
    assert again["flipped"].tier == "mirrored" and again["flipped"].item == "8" and again["flipped"].distance <= 8
    assert {k: m and (m.tier, m.item) for k, m in again.items() if k != "flipped"} == {k: m and (m.tier, m.item) for k, m in found.items() if k != "flipped"}


def test_the_embedding_tier_matches_images_the_hashes_miss_by_the_cosine_of_their_clip_embeddings(tmp_path):
    """The evaluation images embedded with the run's CLIP (the tiny local one); a copy cropped to its centre (no hash
    within the radius) matches when the cosine the model gives the two is at least the threshold, with that cosine."""
    from genixer_ray.decontam.index import build_and_write
    from genixer_ray.filters.clip import clip_scorer
    from genixer_ray.stages.contamination import ContaminationStage
    from genixer_ray.store import RunStore

    tsv = write_tsv(tmp_path / "b.tsv", [{"index": 7, "image": b64(jpeg("chelsea"))}, {"index": 8, "image": b64(jpeg("coffee"))}])
    cfg = DecontaminationConfig(enabled=True, sources=[EvalSource(benchmark="bench", format="vlmevalkit_tsv", path=tsv)], embedding_model="tiny")
    store = RunStore(str(tmp_path / "run"))
    build_and_write(cfg, store.url, {}, "decontam/index-e")
    cropped = decoded(jpeg("coffee", edit=lambda im: crop_margin(im, 0.3)), "cropped")
    stage = ContaminationStage(store.url, "decontam/index-e.npz", {}, cfg)
    assert stage.index.embedded_with == "tiny" and stage.index.embeddings.shape[0] == 2
    assert stage.index.match_images([cropped], cfg.radius) == [None]  # beyond the hashes
    scorer = clip_scorer("tiny")  # by hand: the model's cosine of the copy with each evaluation image
    cosines = scorer.embed([scorer.image_tensor(row_image(cropped))]) @ stage.index.embeddings.astype(np.float32).T
    nearest = int(cosines[0].argmax())
    stage.cfg = cfg.model_copy(update={"embedding_threshold": float(cosines[0, nearest]) + 1e-3})
    assert stage([cropped]) == [cropped]  # the nearest is below the threshold: nothing
    stage.cfg = cfg.model_copy(update={"embedding_threshold": float(cosines[0, nearest]) - 1e-3})
    out = stage([cropped])[0]
    assert out["status"] == "skipped" and out["contamination_tier"] == "embedding" and out["contamination_item"] == ["7", "8"][nearest]
    assert out["contamination_cosine"] == pytest.approx(cosines[0, nearest], abs=1e-3) and "cosine" in out["error_message"]


def test_the_contamination_stage_skips_matches_and_keeps_the_rest(tmp_path):
    from genixer_ray.decontam.index import build_and_write
    from genixer_ray.stages import check_contract
    from genixer_ray.stages.contamination import ContaminationStage
    from genixer_ray.store import RunStore

    tsv = write_tsv(tmp_path / "b.tsv", [{"index": 1, "image": b64(jpeg("chelsea"))}])
    cfg = DecontaminationConfig(enabled=True, sources=[EvalSource(benchmark="bench", format="vlmevalkit_tsv", path=tsv)])
    store = RunStore(str(tmp_path / "run"))
    counts = build_and_write(cfg, store.url, {}, "decontam/index-x")
    assert counts["images"] == 1 and json.loads((tmp_path / "run/decontam/index-x.json").read_text()) == counts
    stage = ContaminationStage(store.url, "decontam/index-x.npz", {}, cfg)
    rows = [decoded(jpeg("chelsea", quality=50), "copy"), decoded(jpeg("rocket"), "clean"), decoded(b"", "broken")]
    out = stage(rows)
    check_contract(stage, rows, out)
    assert out[0]["status"] == "skipped" and out[0]["error_code"] == "contaminated" and out[0]["contamination_benchmark"] == "bench"
    assert "bench item 1 (perceptual, distance" in out[0]["error_message"] and out[0]["error_stage"] == "contamination"
    assert out[1] == rows[1] and out[2] == rows[2]


def test_the_guides_example_is_a_valid_run_config():
    import re
    from pathlib import Path

    import yaml

    page = (Path(__file__).resolve().parents[2] / "docs" / "guide" / "decontamination.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", page, re.S).group(1)
    cfg = build_config(yaml.safe_load(block))
    assert [s.format for s in cfg.decontamination.sources] == ["vlmevalkit_tsv", "parquet", "refer", "vqav2", "images"]


def test_generated_questions_that_repeat_an_evaluation_question_are_found(tmp_path):
    """The text tier: a question equal once normalized, or a long text sharing ten words in a row;
    short everyday questions of other wording do not match."""
    from genixer_ray.decontam.index import build_and_write
    from genixer_ray.stages.contamination import QuestionStage
    from genixer_ray.store import RunStore

    long_q = "Based on the chart in the image, which of the following years shows the largest increase in revenue?"
    tsv = write_tsv(tmp_path / "q.tsv", [{"index": 1, "question": "What is the cat sitting on?", "image": b64(jpeg("chelsea"))},
                                         {"index": 2, "question": long_q, "image": "1"}])
    cfg = DecontaminationConfig(enabled=True, sources=[EvalSource(benchmark="bench", format="vlmevalkit_tsv", path=tsv)])
    store = RunStore(str(tmp_path / "run"))
    assert build_and_write(cfg, store.url, {}, "decontam/index-q")["questions"] == 2
    stage = QuestionStage(store.url, "decontam/index-q.npz", {})
    rows = [
        {"image_id": "a", "sample": 0, "status": "ok", "question": "what is the CAT sitting on"},
        {"image_id": "b", "sample": 0, "status": "ok", "question": "Look: " + long_q.replace("revenue?", "profit?")},
        {"image_id": "c", "sample": 0, "status": "ok", "question": "What is the dog sitting on?"},
        {"image_id": "d", "sample": 0, "status": "ok", "question": None, "turns": [{"question": "What is the cat sitting on?", "answer": "x"}]},
        {"image_id": "e", "sample": 0, "status": "error", "question": "What is the cat sitting on?"},
    ]
    out = {r["image_id"]: r.get("contamination_tier") for r in stage(rows)}
    assert out == {"a": "question", "b": "question_ngram", "c": None, "d": "question", "e": None}


def test_the_console_counts_skipped_rows_apart_from_errors():
    from genixer_ray.schema import code_counts

    assert code_counts({}) == "errors: none"
    assert code_counts({"bad_box": 2, "contaminated": 4}) == "errors: bad_box=2, skipped: contaminated=4"
