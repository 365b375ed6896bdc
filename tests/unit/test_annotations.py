"""Converters from the annotation files as their authors publish them, field by field.

The fixtures under genixer_ray/fixtures/ are small hand-written files in each release's shape
(see the README's table); the image tree they name is the bundled photos laid out under the
datasets' own file names.
"""

import json
import os
import pickle

import pytest

from genixer_ray.annotations import FORMATS, ConversionError, SourceStats, convert_source
from genixer_ray.config import FIXTURE_SOURCES, PRACTICE_SOURCES, DataSource, TrainConfig, build_config
from genixer_ray.fixtures import resolve_fixture
from genixer_ray.instruct import build_instruction_set
from genixer_ray.prompts import PROFILES
from genixer_ray.tasks import TASKS, parse_output

SOURCES = {s["format"]: s for s in FIXTURE_SOURCES}
IMAGES = resolve_fixture("fixtures/images")


def convert(fmt, source=None, **overrides):
    src = DataSource.model_validate((source or SOURCES[fmt]) | overrides)
    stats = SourceStats(fmt)
    files = {role: resolve_fixture(url) for role, url in src.file_roles().items()}
    out = list(convert_source(fmt, files, image_root=resolve_fixture(src.image_root), splits=tuple(src.splits), stats=stats))
    return out, stats


def test_llava_mix_skips_text_only_records():
    s, stats = convert("llava")
    assert [x["task"] for x in s] == ["common_vqa", "multi_turn_dialogue", "common_vqa", "multi_turn_dialogue"]
    assert s[0]["turns"] == [("What is the person wearing?", "A white space suit.")]
    assert s[0]["image"] == f"{IMAGES}/coco/train2017/000000391895.jpg"
    assert s[2]["turns"] == [("What is in the cup?", "Coffee with milk foam.")]  # "<image>" removed wherever it stood
    assert s[2]["image"] == f"{IMAGES}/gqa/images/2400513.jpg"
    assert (stats.records, stats.samples, dict(stats.skipped)) == (5, 4, {"text_only": 1})


def test_vqav2_joins_questions_and_annotations_with_coco_file_names():
    s, stats = convert("vqav2")
    assert [x["turns"][0] for x in s] == [("Is this photo in color?", "no"), ("What vehicle is shown?", "motorcycle"),
                                          ("Is there a flag?", "yes")]
    # The VQA API's name: COCO_{data_subtype}_{image_id zero-padded to 12}.jpg
    assert s[0]["image"] == f"{IMAGES}/coco/train2014/COCO_train2014_000000522418.jpg"
    assert all(os.path.isfile(x["image"]) for x in s) and stats.skipped == {}


def test_gqa_questions():
    s, _ = convert("gqa")
    assert s[1]["turns"] == [("What is under the cup?", "saucer")] and s[1]["task"] == "common_vqa"
    assert s[1]["image"] == f"{IMAGES}/gqa/images/2400513.jpg"


def test_aokvqa_multi_choice_with_coco_2017_paths_parses_back():
    s, _ = convert("aokvqa")
    q, a = s[0]["turns"][0]
    assert q == "Where is the rocket going? Options: (A) underwater (B) into space (C) to the shop (D) nowhere"
    assert a == "(B) into space"
    assert s[0]["image"] == f"{IMAGES}/coco/train2017/000000309022.jpg"  # {split}2017/{image_id:012d}.jpg
    p = parse_output(f"Question: {q} Answer: {a}", "multi_choice_vqa")
    assert p.answer_letter == "B" and len(p.options) == 4


def test_refer_pickle_and_instances_with_splits():
    s, stats = convert("refer")
    assert stats.records == 4 and [x["task"] for x in s[:4]] == ["rec", "reg", "rec", "reg"]  # two sentences, two tasks each
    # astronaut: 512 x 512 in instances.json; COCO bbox [150, 20, 200, 200] is x, y, w, h in pixels:
    # x1 = 150/512 = 0.293, y1 = 20/512 = 0.039, x2 = 350/512 = 0.684, y2 = 220/512 = 0.430
    assert s[0]["referring"] == {"expression": "the astronaut's face", "region": "[0.293,0.039,0.684,0.430]"}
    assert s[2]["referring"]["expression"] == "the helmet-less head"  # the sentence's "sent", not the dict
    assert s[0]["image"] == f"{IMAGES}/coco/train2014/COCO_train2014_000000391895.jpg"
    train, stats = convert("refer", splits=["train"])
    assert {x["referring"]["expression"] for x in train} == {"the astronaut's face", "the helmet-less head", "the cat"}
    assert stats.records == 2  # refs of other splits are not read
    testa, _ = convert("refer", splits=["testA"])
    # camera: 512 x 512, bbox [100, 50, 300, 400] -> [100/512, 50/512, 400/512, 450/512]
    assert testa[0]["referring"]["region"] == "[0.195,0.098,0.781,0.879]"


def test_shikra_rec_jsonl_reads_pixel_xyxy():
    s, _ = convert("rec_jsonl")
    # coffee: 600 x 400; bbox [150, 60, 450, 300] is x1, y1, x2, y2 in pixels (not x, y, w, h)
    assert s[0]["referring"] == {"expression": "the cup of coffee", "region": "[0.250,0.150,0.750,0.750]"}
    assert s[0]["image"] == f"{IMAGES}/coco/train2014/COCO_train2014_000000318219.jpg"


def test_pointqa_box_and_point_variants():
    s, _ = convert("pointqa")
    # coffee: img_w 600, img_h 400; bbox xyxy [150, 60, 450, 300]; point [300, 200]
    assert [x["turns"] for x in s[:2]] == [[("What is in this cup? [0.250,0.150,0.750,0.750]", "coffee")],
                                          [("What is in this cup? [0.500,0.500]", "coffee")]]
    assert s[0]["image"] == f"{IMAGES}/vg/VG_100K/2400513.jpg"
    assert all(parse_output(f"Question: {q} Answer: {a}", "pointqa") for x in s for q, a in x["turns"])


def test_flickr30k_entities_sentences_and_xml():
    s, stats = convert("flickr30k")
    assert stats.records == 3 and [x["task"] for x in s] == ["q_ca"] * 3
    # camera (512 x 512): XML box 1 is <xmin>121 <ymin>41 <xmax>371 <ymax>461, 1-based: [120, 40, 370, 460] -> /512
    assert s[0]["turns"][0][1] == (
        "A man [0.234,0.078,0.723,0.898] holds a camera [0.352,0.195,0.527,0.352] on a tripod [0.391,0.586,0.684,0.977] ."
    )
    assert s[1]["turns"][0][1].endswith("in a park .")  # entity 4 has no box: its words only
    assert s[2]["turns"][0][1] == "A motorcycle [0.054,0.120,0.864,0.880] stands in a room ."  # a scene entity: no box
    assert s[2]["image"] == f"{IMAGES}/flickr30k/1000366164.jpg"
    no_index, _ = convert("flickr30k", files={k: v for k, v in SOURCES["flickr30k"]["files"].items() if k != "index"})
    assert len(no_index) == 3  # without train.txt: every sentence file


def test_gpt4gen_qca_and_rd():
    q, _ = convert("gpt4gen_qca")
    # astronaut 512 x 512; boxes xyxy [[150, 20, 350, 220], [0, 250, 512, 512]]
    assert q[0]["turns"] == [("Is this person ready for space?",
                              "The person [0.293,0.039,0.684,0.430] wears a space suit [0.000,0.488,1.000,1.000], so yes.")]
    rd, stats = convert("gpt4gen_rd")
    assert stats.records == 1 and rd[0]["task"] == "referential_dialogue"  # two rounds on one image: one dialogue
    assert rd[0]["turns"] == [("What is the animal [0.133,0.100,0.754,0.967] doing?", "It is resting."),
                              ("What is it lying on?", "On a blanket [0.000,0.667,1.000,1.000].")]


def test_every_fixture_converts_and_every_target_parses_as_its_task():
    seen = set()
    for src in FIXTURE_SOURCES + PRACTICE_SOURCES:
        samples, stats = convert(src["format"], src)
        assert stats.samples == len(samples) > 0
        for row in build_instruction_set(iter(samples), seed=0, specific_share=0.5, task_weights={}, profile=PROFILES["genixer-ray"]):
            parse_output(row["target"], row["task"])
            seen.add(row["task"])
    assert seen == set(TASKS) - {"adversarial_vqa"}  # no public release holds adversarial VQA


BAD = {
    "llava": [{"id": "x", "image": "a.jpg", "conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "q"}]}],
    "aokvqa": [{"split": "train", "image_id": 1, "question": "q?", "choices": ["a", "b"], "correct_choice_idx": 5}],
    "rec_jsonl": [{"img_path": "a.jpg", "expression": "the dog", "bbox": [50, 50, 10, 10], "height": 100, "width": 100}],
    "pointqa": [{"file_path": "../../etc/passwd", "question": "q?", "answer": "a", "bbox": [0, 0, 1, 1], "point": [0, 0],
                 "img_w": 10, "img_h": 10}],
    "gpt4gen_qca": [{"img_path": "a.jpg", "boxes": [[0, 0, 5, 5]], "width": 10, "height": 10, "question": "<ph_st>it<ph_ed>?",
                     "question_boxes_seq": [], "cot_with_ans": "yes", "answer_boxes_seq": []}],
}
REASONS = {"llava": "bad_roles", "aokvqa": "bad_choices", "rec_jsonl": "bad_box", "pointqa": "image_escapes_root",
           "gpt4gen_qca": "box_seq_mismatch"}


@pytest.mark.parametrize("fmt", sorted(BAD))
def test_a_malformed_record_is_counted_and_the_file_still_converts(tmp_path, fmt):
    src = dict(SOURCES[fmt])
    good = src["path"]
    lines = [json.loads(line) for line in open(resolve_fixture(good))] if good.endswith(".jsonl") else json.load(open(resolve_fixture(good)))
    records = BAD[fmt] + lines + [{"unexpected": True}]
    path = tmp_path / os.path.basename(good)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) if good.endswith(".jsonl") else json.dumps(records))
    s, stats = convert(fmt, src | {"path": str(path)})
    # The malformed record by its reason; the record of no known shape by whichever field it lacks.
    skipped_before = 1 if fmt == "llava" else 0  # the LLaVA fixture holds a text-only record
    assert stats.skipped[REASONS[fmt]] == 1 and sum(stats.skipped.values()) == 2 + skipped_before
    assert stats.samples == len(s) > 0 and stats.records == len(records)
    assert stats.examples[REASONS[fmt]][0].startswith(("record 0", "line 1"))


def test_malformed_multi_file_sources(tmp_path):
    q = json.load(open(resolve_fixture(SOURCES["vqav2"]["files"]["questions"])))
    q["questions"].append({"image_id": 5, "question": "Unanswered?", "question_id": 99})
    (tmp_path / "q.json").write_text(json.dumps(q))
    src = SOURCES["vqav2"] | {"files": SOURCES["vqav2"]["files"] | {"questions": str(tmp_path / "q.json")}}
    s, stats = convert("vqav2", src)
    assert len(s) == 3 and stats.skipped == {"no_annotation": 1}
    # A single official file where two are needed: the error names what is missing, before reading.
    with pytest.raises(ConversionError, match=r"needs the file\(s\) \['annotations'\]"):
        list(convert_source("vqav2", {"questions": str(tmp_path / "q.json")}, image_root="/x"))
    with pytest.raises(ConversionError, match="is not a VQAv2 annotations file"):
        list(convert_source("vqav2", {"questions": str(tmp_path / "q.json"), "annotations": str(tmp_path / "q.json")}, image_root="/x"))
    with pytest.raises(ConversionError, match="no file at"):
        list(convert_source("gqa", {"path": str(tmp_path / "missing.json")}, image_root="/x"))
    # Nothing converts: the source fails, naming the reasons.
    (tmp_path / "bad.jsonl").write_text('{"img_path": "a.jpg"}\nnot json\n')
    with pytest.raises(ConversionError, match=r"nothing in rec_jsonl:bad.jsonl converted .*bad_json=1, malformed=1"):
        list(convert_source("rec_jsonl", {"path": str(tmp_path / "bad.jsonl")}, image_root="/x"))


class _Hostile:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/genixer-hostile-pickle",))


def test_a_pickle_carrying_a_callable_is_refused(tmp_path):
    refs = tmp_path / "refs(unc).p"
    refs.write_bytes(pickle.dumps([{"ref_id": 0, "payload": _Hostile()}], protocol=2))
    files = {"refs": str(refs), "instances": resolve_fixture(SOURCES["refer"]["files"]["instances"])}
    with pytest.raises(ConversionError, match=r"refers to (posix|os|nt)\.system; only plain containers"):
        list(convert_source("refer", files, image_root="/x"))
    assert not os.path.exists("/tmp/genixer-hostile-pickle")
    refs.write_bytes(b"not a pickle")
    with pytest.raises(ConversionError, match="is not a readable pickle"):
        list(convert_source("refer", files, image_root="/x"))


def test_sources_name_their_files_and_the_config_checks_them():
    cfg = build_config(None, kind=TrainConfig)
    assert {s.format for s in cfg.data.sources} == set(FORMATS)  # the default set covers every format
    with pytest.raises(Exception, match=r"format 'vqav2' takes files: \{questions, annotations\}; missing \['annotations'\]"):
        DataSource(format="vqav2", files={"questions": "q.json"}, image_root="/x")
    with pytest.raises(Exception, match="format 'gqa' takes path"):
        DataSource(format="gqa", files={"questions": "q.json"}, image_root="/x")
    with pytest.raises(Exception, match="splits apply to the refer format only"):
        DataSource(format="gqa", path="q.json", image_root="/x", splits=["train"])


def test_malformed_records_of_the_other_formats(tmp_path):
    # GQA: a question without its image id.
    g = json.load(open(resolve_fixture(SOURCES["gqa"]["path"])))
    g["bad"] = {"question": "Where?", "answer": "there"}
    (tmp_path / "gqa.json").write_text(json.dumps(g))
    s, stats = convert("gqa", SOURCES["gqa"] | {"path": str(tmp_path / "gqa.json")})
    assert len(s) == 2 and stats.skipped == {"malformed": 1} and "KeyError" in stats.examples["malformed"][0]
    # refer: a ref whose annotation is missing and one whose box is inverted.
    refs = pickle.loads(open(resolve_fixture(SOURCES["refer"]["files"]["refs"]), "rb").read())
    inst = json.load(open(resolve_fixture(SOURCES["refer"]["files"]["instances"])))
    refs.append(dict(refs[0], ref_id=90, ann_id=12345))
    refs.append(dict(refs[0], ref_id=91, ann_id=777))
    inst["annotations"].append(dict(inst["annotations"][0], id=777, bbox=[100.0, 100.0, -50.0, 10.0]))
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    (tmp_path / "instances.json").write_text(json.dumps(inst))
    files = {"refs": str(tmp_path / "refs(unc).p"), "instances": str(tmp_path / "instances.json")}
    s, stats = convert("refer", SOURCES["refer"] | {"files": files})
    assert len(s) == 10 and stats.skipped == {"no_annotation": 1, "bad_box": 1}
    # Flickr30k Entities: an image without its XML, and an unclosed entity tag.
    root = tmp_path / "flickr"
    (root / "Sentences").mkdir(parents=True)
    (root / "Annotations").mkdir()
    src = {k: resolve_fixture(v) for k, v in SOURCES["flickr30k"]["files"].items()}
    for name in ("1002674143", "1000366164"):
        (root / "Sentences" / f"{name}.txt").write_text(open(f"{src['sentences']}/{name}.txt").read())
        (root / "Annotations" / f"{name}.xml").write_text(open(f"{src['annotations']}/{name}.xml").read())
    (root / "Sentences" / "1000366164.txt").write_text("[/EN#4/vehicles A motorcycle stands .\n")
    (root / "Sentences" / "999.txt").write_text("[/EN#1/people A man] walks .\n")
    s, stats = convert("flickr30k", SOURCES["flickr30k"] | {"files": {"sentences": str(root / "Sentences"),
                                                                       "annotations": str(root / "Annotations")}})
    assert len(s) == 2 and stats.skipped == {"bad_sentence": 1, "no_annotation": 1}
    # GPT4Gen RD: a round whose box sequence names a box that does not exist.
    rd = [json.loads(line) for line in open(resolve_fixture(SOURCES["gpt4gen_rd"]["path"]))]
    bad = dict(rd[0], img_path="1000092795.jpg", question_boxes_seq=[[5]])
    (tmp_path / "rd.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [bad, *rd]))
    s, stats = convert("gpt4gen_rd", SOURCES["gpt4gen_rd"] | {"path": str(tmp_path / "rd.jsonl")})
    assert len(s) == 1 and len(s[0]["turns"]) == 2 and stats.skipped == {"box_seq_mismatch": 1}


def test_training_images_linked_out_of_their_root_are_refused(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (tmp_path / "private.jpg").write_bytes(b"x")
    os.symlink(tmp_path / "private.jpg", root / "2400513.jpg")
    os.symlink(resolve_fixture("fixtures/images/gqa/images/2331963.jpg"), root / "2331963.jpg")  # outside too
    with pytest.raises(ConversionError, match="nothing in gqa.*image_escapes_root=2"):
        convert("gqa", SOURCES["gqa"] | {"image_root": str(root)})
