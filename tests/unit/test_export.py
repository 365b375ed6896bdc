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
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "x.json")]) == 1
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
