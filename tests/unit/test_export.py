"""LLaVA JSON export of a run's rows: every record's image opens as LLaVA's loader opens it, the
file parses as strict JSON, and the project's own LLaVA converter reads it back."""

import io
import json
import math
import os

import pytest
from PIL import Image

from genixer_ray.annotations import convert_source
from genixer_ray.cli import main
from genixer_ray.export import export_llava
from genixer_ray.schema import to_frame
from genixer_ray.store import RunStore


def png(color, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def strict_json(text: str):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def write_run(tmp_path, sources: dict[str, str] | None = None, plan_data: dict[str, bytes] | None = None) -> tuple[str, str]:
    """A committed shard written by hand, its plan beside it; local images under ``images/``."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    (images / "a.png").write_bytes(png("red"))
    (images / "sub" / "b.jpg").write_bytes(png("blue"))
    (images / "c.png").write_bytes(png("green"))
    sources = {"a": f"{images}/a.png", "b": f"{images}/sub/b.jpg", "c": f"{images}/c.png", "d": f"{images}/d.png"} | (sources or {})
    store = RunStore(str(tmp_path / "runs" / "r1"))
    plan = [{"image_id": k, "source": v, "data": (plan_data or {}).get(k)} for k, v in sources.items()]
    store.write_plan(iter(plan), shard_size=10, meta={"input": "by hand"})
    base = {"shard": 0, "status": "ok", "text": "t", "run_id": "r1", "generator_hash": "abc", "seed": 5}
    rows = [
        base | {"image_id": "a", "source": sources["a"], "parsed_task": "rec", "question": "Where is the dog?",
                "answer": "[0.100,0.200,0.500,0.900]", "answer_boxes": [[0.1, 0.2, 0.5, 0.9]], "keep": True, "clip_score": 0.31,
                "judge_p_yes": math.nan},
        base | {"image_id": "b", "source": sources["b"], "parsed_task": "multi_turn_dialogue", "question": "Who?",
                "answer": "a man", "turns": [{"question": "Who?", "answer": "a man"}, {"question": "Where?", "answer": "in space"}],
                "keep": True, "judge_p_yes": 0.6},
        base | {"image_id": "c", "source": sources["c"], "parsed_task": "multi_choice_vqa",
                "question": "Color? (A) red (B) blue", "answer": "(B) blue", "keep": False, "reject_reasons": ["judge_outside_band"]},
        base | {"image_id": "d", "source": sources["d"], "status": "error", "error_code": "bad_box", "keep": False},
    ]
    store.commit_shard(0, to_frame(rows), {"by_status": {}, "by_error": {}, "by_task": {}})
    return store.url, str(images)


def opens_as_llava_does(image_folder: str, record: dict) -> tuple[int, int]:
    with Image.open(os.path.join(image_folder, record["image"])) as im:  # LLaVA's LazySupervisedDataset
        return im.convert("RGB").size


def test_kept_rows_become_llava_records_that_convert_back(tmp_path):
    run, images = write_run(tmp_path)
    out = tmp_path / "kept.json"
    counts = export_llava(run, str(out), image_root=images)
    assert counts["records"] == 2 and counts["by_task"] == {"rec": 1, "multi_turn_dialogue": 1} and counts["images_copied"] == 0
    records = strict_json(out.read_text())  # the NaN judge score became null
    assert [r["id"] for r in records] == ["a", "b"]
    assert records[0]["image"] == "a.png" and records[1]["image"] == "sub/b.jpg"
    assert all(opens_as_llava_does(images, r) == (40, 30) for r in records)
    assert records[0]["conversations"] == [
        {"from": "human", "value": "<image>\nWhere is the dog?"}, {"from": "gpt", "value": "[0.100,0.200,0.500,0.900]"}
    ]
    assert [c["value"] for c in records[1]["conversations"]] == ["<image>\nWho?", "a man", "Where?", "in space"]
    assert records[0]["genixer"]["clip_score"] > 0.3 and records[0]["genixer"]["judge_p_yes"] is None
    assert records[1]["genixer"]["judge_p_yes"] == 0.6 and records[0]["genixer"]["generator_hash"] == "abc"

    # The export is training data for the next generator (or any LLaVA trainer).
    samples = list(convert_source("llava", {"path": str(out)}, image_root=images))
    assert [s["turns"] for s in samples] == [[("Where is the dog?", "[0.100,0.200,0.500,0.900]")],
                                             [("Who?", "a man"), ("Where?", "in space")]]
    assert samples[1]["image"].endswith("images/sub/b.jpg")


def test_a_relative_image_root_matches(tmp_path, monkeypatch):
    run, images = write_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    export_llava(run, str(tmp_path / "kept.jsonl"), image_root="images")
    records = [strict_json(line) for line in (tmp_path / "kept.jsonl").read_text().splitlines()]
    assert [r["image"] for r in records] == ["a.png", "sub/b.jpg"]


def test_a_run_on_s3_exports_what_the_same_run_on_disk_does(tmp_path, s3):
    """On an object store the shards and plans are read several at a time: same records, same order."""
    import fsspec

    run, images = write_run(tmp_path)
    so = s3["storage_options"]
    fsspec.filesystem("s3", **so).put(run, f"{s3['bucket']}/runs/r1", recursive=True)
    local = export_llava(run, str(tmp_path / "local.json"), image_root=images, view="parsed")
    remote = export_llava(f"s3://{s3['bucket']}/runs/r1", str(tmp_path / "remote.json"), storage_options=so, image_root=images, view="parsed")
    assert remote == local | {"output": remote["output"]} and local["records"] == 3
    assert strict_json((tmp_path / "remote.json").read_text()) == strict_json((tmp_path / "local.json").read_text())


def test_images_from_s3_and_inline_bytes_are_copied_beside_the_export(tmp_path, s3):
    import fsspec

    so = s3["storage_options"]
    fsspec.filesystem("s3", **so).pipe_file(f"{s3['bucket']}/photos/a.png", png("red", (64, 48)))
    run, _ = write_run(
        tmp_path, sources={"a": f"s3://{s3['bucket']}/photos/a.png", "b": "inline:b"}, plan_data={"b": png("blue", (20, 20))},
    )
    for out in (tmp_path / "out" / "kept.json", tmp_path / "out" / "kept.jsonl"):
        counts = export_llava(run, str(out), storage_options=so)
        assert counts["images_copied"] == 2 and counts["records"] == 2
        text = out.read_text()
        records = [strict_json(line) for line in text.splitlines()] if out.suffix == ".jsonl" else strict_json(text)
        folder = str(out.parent)  # LLaVA's image_folder: the export's folder
        assert [opens_as_llava_does(folder, r) for r in records] == [(64, 48), (20, 20)]
        assert all(r["image"].startswith(f"{out.stem}_images/") for r in records)
    # Stable names: the same bytes, the same file.
    again = export_llava(run, str(tmp_path / "out" / "kept.json"), storage_options=so)
    assert again["images_copied"] == 2 and len(os.listdir(tmp_path / "out" / "kept_images")) == 2


def test_all_parsed_missing_images_and_the_command_line(tmp_path, capsys):
    run, images = write_run(tmp_path)
    os.remove(f"{images}/c.png")
    assert main(["export", run, str(tmp_path / "all.json"), "--all-parsed", "--copy-images"]) == 0
    records = strict_json((tmp_path / "all.json").read_text())
    assert [r["id"] for r in records] == ["a", "b"]  # c's image is gone: left out and said so
    out = capsys.readouterr().out
    assert "exported 2 records from 1 shards" in out and "2 images copied" in out and "left out 1 rows" in out
    assert all(opens_as_llava_does(str(tmp_path), r) for r in records)
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "x.json")]) == 2  # a user error (genixer_ray.errors)
    assert "no committed shards" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_no_non_finite_number_reaches_the_file(tmp_path, bad):
    run, images = write_run(tmp_path)
    store = RunStore(run)
    frame = store.read_frame(store.shard_name(0))
    rows = frame.to_dicts()
    rows[1]["clip_score"] = float(bad)
    store.write_frame(store.shard_name(0), to_frame(rows))
    export_llava(run, str(tmp_path / "k.json"), image_root=images)
    assert strict_json((tmp_path / "k.json").read_text())[1]["genixer"]["clip_score"] is None


def shikra_frame(box_px: list[float], w: int, h: int) -> list[float]:
    """A pixel box as Shikra's pipeline sees it: Expand2square shifts it into the padded square,
    BoxFormatProcess normalizes by the square's side (mllm/dataset/utils/transform.py)."""
    x1, y1, x2, y2 = box_px
    side = max(w, h)
    if w > h:
        y1, y2 = y1 + (w - h) // 2, y2 + (w - h) // 2
    elif h > w:
        x1, x2 = x1 + (h - w) // 2, x2 + (h - w) // 2
    return [round(min(max(v / side, 0.0), 1.0), 3) for v in (x1, y1, x2, y2)]


def test_shikra_export_writes_pixel_boxes_that_land_in_shikras_frame(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "wide.jpg").write_bytes(png("white", (640, 480)))
    store = RunStore(str(tmp_path / "runs" / "g"))
    store.write_plan(iter([{"image_id": i, "source": f"{images}/wide.jpg", "data": None} for i in "abcd"]), shard_size=10, meta={})
    base = {"shard": 0, "status": "ok", "text": "t", "source": f"{images}/wide.jpg", "image_width": 640, "image_height": 480, "keep": True}
    box = [0.12, 0.30, 0.45, 0.80]
    rows = [
        base | {"image_id": "a", "parsed_task": "rec", "question": "Where is the red car?", "answer": "[0.120,0.300,0.450,0.800]",
                "answer_boxes": [box]},
        base | {"image_id": "b", "parsed_task": "referential_dialogue", "question": "What is [0.120,0.300,0.450,0.800] doing?",
                "answer": "Sitting.", "turns": [
                    {"question": "What is [0.120,0.300,0.450,0.800] doing?", "answer": "Sitting."},
                    {"question": "And the other one?", "answer": "A dog [0.500,0.100,0.900,0.400] stands."}]},
        base | {"image_id": "c", "parsed_task": "pointqa", "question": "What is at [0.250,0.500]?", "answer": "a wheel",
                "points": [[0.25, 0.5]]},
        base | {"image_id": "d", "parsed_task": "common_vqa", "question": "What color?", "answer": "white"},
    ]
    store.commit_shard(0, to_frame(rows), {"by_status": {}, "by_error": {}, "by_task": {}})
    assert main(["export", store.url, str(tmp_path / "shikra"), "--format", "shikra", "--image-root", str(images)]) == 0
    read = {n: [strict_json(line) for line in (tmp_path / "shikra" / n).read_text().splitlines()]
            for n in ("REC_genixer.jsonl", "GPT4GEN_RD_genixer.jsonl", "pointQA_genixer.jsonl", "GPT4GEN_genixer.jsonl")}
    rec = read["REC_genixer.jsonl"][0]
    assert {k: rec[k] for k in ("img_path", "expression", "height", "width")} == {"img_path": "wide.jpg", "expression": "the red car",
                                                                                 "height": 480, "width": 640}
    # 640 x 480: [0.12, 0.30, 0.45, 0.80] is [76.8, 144, 288, 384] pixels; in Shikra's padded
    # 640 x 640 frame (80 pixels above) that is [0.12, 0.35, 0.45, 0.725], computed by hand.
    assert rec["bbox"] == [76.8, 144.0, 288.0, 384.0]
    assert shikra_frame(rec["bbox"], 640, 480) == [0.12, 0.35, 0.45, 0.725]
    rd = read["GPT4GEN_RD_genixer.jsonl"]
    assert [r["question"] for r in rd] == ["What is<ph_st><ph_ed> doing?", "And the other one?"]
    assert rd[0]["question_boxes_seq"] == [[0]] and rd[1]["answer_boxes_seq"] == [[1]] and rd[1]["cot_with_ans"] == "A dog<ph_st><ph_ed> stands."
    assert rd[1]["boxes"][1] == [320.0, 48.0, 576.0, 192.0] and shikra_frame(rd[1]["boxes"][1], 640, 480) == [0.5, 0.2, 0.9, 0.425]
    pq = read["pointQA_genixer.jsonl"][0]
    assert pq["point"] == [160.0, 240.0] and pq["bbox"] is None and pq["question"] == "What is at ?"  # the region is a field
    assert read["GPT4GEN_genixer.jsonl"] == []  # common VQA is not grounding data


def test_each_sample_of_an_image_is_its_own_record_with_one_copy_of_the_image(tmp_path):
    store = RunStore(str(tmp_path / "runs" / "s"))
    store.write_plan(iter([{"image_id": "a", "source": "inline:a", "data": png("red")}]), shard_size=10, meta={"samples_per_image": 3})
    rows = [{"shard": 0, "image_id": "a", "sample": s, "source": "inline:a", "status": "ok", "parsed_task": "common_vqa",
             "question": f"Q{s}?", "answer": "yes", "keep": True} for s in range(3)]
    store.commit_shard(0, to_frame(rows), {"by_status": {"ok": 3}, "by_error": {}, "by_task": {}})
    out = tmp_path / "kept.json"
    counts = export_llava(store.url, str(out))
    records = strict_json(out.read_text())
    assert [r["id"] for r in records] == ["a", "a#1", "a#2"] and counts["images_copied"] == 1
    assert len({r["image"] for r in records}) == 1 and opens_as_llava_does(str(tmp_path), records[0]) == (40, 30)
