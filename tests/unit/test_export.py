"""LLaVA JSON export of a run's rows, read back by the project's own LLaVA converter."""

import json

from genixer_ray.cli import main
from genixer_ray.export import export_llava
from genixer_ray.annotations import convert_source
from genixer_ray.schema import to_frame
from genixer_ray.store import RunStore


def write_run(tmp_path) -> tuple[str, str]:
    images = tmp_path / "images"
    store = RunStore(str(tmp_path / "runs" / "r1"))
    base = {"shard": 0, "status": "ok", "text": "t", "run_id": "r1", "generator_hash": "abc", "seed": 5}
    rows = [
        base | {"image_id": "a", "source": f"{images}/a.png", "parsed_task": "rec", "question": "Where is the dog?",
                "answer": "[0.100,0.200,0.500,0.900]", "answer_boxes": [[0.1, 0.2, 0.5, 0.9]], "keep": True, "clip_score": 0.31},
        base | {"image_id": "b", "source": f"{images}/sub/b.jpg", "parsed_task": "multi_turn_dialogue", "question": "Who?",
                "answer": "a man", "turns": [{"question": "Who?", "answer": "a man"}, {"question": "Where?", "answer": "in space"}],
                "keep": True, "judge_p_yes": 0.6},
        base | {"image_id": "c", "source": f"{images}/c.png", "parsed_task": "multi_choice_vqa",
                "question": "Color? (A) red (B) blue", "answer": "(B) blue", "keep": False, "reject_reasons": ["judge_outside_band"]},
        base | {"image_id": "d", "source": f"{images}/d.png", "status": "error", "error_code": "bad_box", "keep": False},
    ]
    store.commit_shard(0, to_frame(rows), {"by_status": {}, "by_error": {}, "by_task": {}})
    return store.url, str(images)


def test_kept_rows_become_llava_records_that_convert_back(tmp_path):
    run, images = write_run(tmp_path)
    out = tmp_path / "kept.json"
    counts = export_llava(run, str(out), image_root=images)
    assert counts["records"] == 2 and counts["by_task"] == {"rec": 1, "multi_turn_dialogue": 1}
    records = json.loads(out.read_text())
    assert [r["id"] for r in records] == ["a", "b"]
    assert records[0]["image"] == "a.png" and records[1]["image"] == "sub/b.jpg"
    assert records[0]["conversations"] == [
        {"from": "human", "value": "<image>\nWhere is the dog?"}, {"from": "gpt", "value": "[0.100,0.200,0.500,0.900]"}
    ]
    assert [c["value"] for c in records[1]["conversations"]] == ["<image>\nWho?", "a man", "Where?", "in space"]
    assert records[0]["genixer"]["clip_score"] > 0.3 and records[1]["genixer"]["judge_p_yes"] == 0.6
    assert records[0]["genixer"]["generator_hash"] == "abc"

    # The export is training data for the next generator (or any LLaVA trainer).
    samples = list(convert_source("llava", {"path": str(out)}, image_root=images))
    assert [s["turns"] for s in samples] == [[("Where is the dog?", "[0.100,0.200,0.500,0.900]")],
                                             [("Who?", "a man"), ("Where?", "in space")]]
    assert samples[1]["image"].endswith("images/sub/b.jpg")


def test_all_parsed_and_the_command_line(tmp_path, capsys):
    run, _ = write_run(tmp_path)
    assert main(["export", run, str(tmp_path / "all.json"), "--all-parsed"]) == 0
    assert [r["id"] for r in json.loads((tmp_path / "all.json").read_text())] == ["a", "b", "c"]
    assert "exported 3 records from 1 shards" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "x.json")]) == 1
    assert "no committed shards" in capsys.readouterr().err
