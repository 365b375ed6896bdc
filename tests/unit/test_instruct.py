"""Converters from public formats into generator training samples, and the instruction mix."""

import json
from pathlib import Path

import pytest

import genixer_ray
from genixer_ray.images import embedded_image_paths
from genixer_ray.instruct import ConversionError, build_instruction_set, convert
from genixer_ray.tasks import TASKS, parse_output

FIX = Path(genixer_ray.__file__).parent / "fixtures"
ROOT = str(next(iter(embedded_image_paths().values())).parent)


def samples(fmt, name):
    return list(convert(fmt, str(FIX / name), image_root=ROOT))


def test_llava_conversations():
    s = samples("llava", "llava.json")
    assert [x["task"] for x in s] == ["common_vqa", "multi_turn_dialogue", "common_vqa", "multi_turn_dialogue"]
    assert s[0]["turns"] == [("What is the person wearing?", "A white space suit.")]
    assert s[2]["turns"][0][0] == "What is in the cup?"  # <image> removed wherever it stood
    assert s[0]["image"] == f"{ROOT}/astronaut.png"


def test_vqav2_and_gqa():
    v = samples("vqa", "vqav2.json")
    assert [x["turns"][0] for x in v][:2] == [("Is this photo in color?", "no"), ("What vehicle is shown?", "motorcycle")]
    g = samples("vqa", "gqa.json")
    assert g[1]["turns"] == [("What is under the cup?", "a saucer")] and g[1]["image"].endswith("coffee.png")


def test_aokvqa_multi_choice_parses_back():
    s = samples("aokvqa", "aokvqa.json")
    q, a = s[0]["turns"][0]
    assert a == "(B) into space"
    p = parse_output(f"Question: {q} Answer: {a}", "multi_choice_vqa")
    assert p.answer_letter == "B" and len(p.options) == 4


def test_refcoco_normalizes_pixel_boxes_for_rec_and_reg():
    s = samples("refcoco", "refcoco.json")
    assert [x["task"] for x in s[:4]] == ["rec", "reg", "rec", "reg"]  # two sentences, two tasks each
    # astronaut.png is 512 x 512; bbox [150, 20, 200, 200] in x, y, w, h pixels
    assert s[0]["turns"] == [("Where is the astronaut's face?", "[0.293,0.039,0.684,0.430]")]
    assert s[1]["turns"] == [("What is in the region [0.293,0.039,0.684,0.430]?", "the astronaut's face")]


def test_pointqa_flickr_gpt4gen():
    p = samples("pointqa", "pointqa.json")
    assert p[0]["turns"] == [("What is at [0.500,0.500]?", "coffee")]  # coffee.png is 600 x 400
    f = samples("flickr30k", "flickr30k.json")
    assert f[1]["turns"][0][1] == "A motorcycle [0.054,0.120,0.864,0.880] stands in a room ."  # no box: plain phrase
    g = samples("gpt4gen", "gpt4gen.json")
    assert g[0]["task"] == "referential_dialogue" and len(g[0]["turns"]) == 2
    assert g[1]["turns"][0][1] == "The person [0.293,0.039,0.684,0.430] wears a space suit [0.000,0.488,1.000,1.000], so yes."


def test_every_fixture_sample_parses_as_its_task():
    seen = set()
    for fmt, name in [("llava", "llava.json"), ("vqa", "vqav2.json"), ("aokvqa", "aokvqa.json"), ("refcoco", "refcoco.json"),
                      ("pointqa", "pointqa.json"), ("flickr30k", "flickr30k.json"), ("gpt4gen", "gpt4gen.json")]:
        for row in build_instruction_set(iter(samples(fmt, name)), seed=0, specific_share=0.5, task_weights={}):
            parse_output(row["target"], row["task"])
            seen.add(row["task"])
    assert seen == set(TASKS) - {"adversarial_vqa"}


def test_bad_records_and_escapes(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps([{"image": "a.png", "width": 10, "height": 10}]))
    with pytest.raises(ConversionError, match="record 0 is not valid refcoco"):
        list(convert("refcoco", str(tmp_path / "r.json"), image_root=ROOT))
    (tmp_path / "e.json").write_text(json.dumps([{"image": "../../etc/x.png", "question": "q", "answer": "a"}]))
    with pytest.raises(ConversionError, match="escapes"):
        list(convert("vqa", str(tmp_path / "e.json"), image_root=ROOT))
    with pytest.raises(ConversionError, match="unknown format"):
        list(convert("coco", str(tmp_path / "e.json"), image_root=ROOT))


def test_mix_weights_share_and_determinism():
    base = [{"sample_id": f"s{i}", "image": "x", "task": "rec" if i % 2 else "reg", "turns": [("q", "[0.1,0.1,0.2,0.2]")]} for i in range(400)]
    rows = list(build_instruction_set(iter(base), seed=1, specific_share=0.25, task_weights={"rec": 2.0, "reg": 0.5}))
    n_rec = sum(r["task"] == "rec" for r in rows)
    n_reg = sum(r["task"] == "reg" for r in rows)
    assert n_rec == 400 and 70 <= n_reg <= 130
    share = sum(r["mode"] == "specific" for r in rows) / len(rows)
    assert 0.18 <= share <= 0.32
    for r in rows:
        assert r["instruction"].endswith(TASKS[r["task"]].sentence) == (r["mode"] == "specific")
    assert rows == list(build_instruction_set(iter(base), seed=1, specific_share=0.25, task_weights={"rec": 2.0, "reg": 0.5}))
    assert not list(build_instruction_set(iter(base), seed=1, specific_share=0.0, task_weights={"rec": 0, "reg": 0}))
