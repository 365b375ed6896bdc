"""Stages as plain callables, without Ray."""

import io

import numpy as np
import pytest
from PIL import Image

from genixer_ray.config import InputConfig, load_config
from genixer_ray.stages import IMAGE_COLUMNS, StageContractError, check_contract, drop_image, row_image, run_stages
from genixer_ray.stages.decode import DecodeStage
from genixer_ray.stages.generate import GenerateStage
from genixer_ray.stages.parse import ParseStage
from genixer_ray.stages.prompt import PromptStage


def png(w=40, h=30) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_decode_stage_one_row_per_input_with_codes(tmp_path):
    (tmp_path / "ok.png").write_bytes(png())
    (tmp_path / "bad.png").write_bytes(b"nope")
    batch = [
        {"shard": 0, "image_id": "ok", "source": str(tmp_path / "ok.png"), "data": None},
        {"shard": 0, "image_id": "inline", "source": "inline:x", "data": png(8, 6)},
        {"shard": 0, "image_id": "gone", "source": str(tmp_path / "gone.png"), "data": None},
        {"shard": 0, "image_id": "bad", "source": str(tmp_path / "bad.png"), "data": None},
        {"shard": 0, "image_id": "dir", "source": str(tmp_path), "data": None},
        {"shard": 0, "image_id": "esc", "source": "../x", "data": None, "error_code": "path_escapes_root", "error_message": "m"},
    ]
    stage = DecodeStage(InputConfig(max_side=20))
    out = stage(batch)
    assert [r["image_id"] for r in out] == [r["image_id"] for r in batch]
    codes = {r["image_id"]: (r["status"], r.get("error_code"), r.get("error_stage")) for r in out}
    assert codes == {
        "ok": ("ok", None, None), "inline": ("ok", None, None), "gone": ("error", "missing", "decode"),
        "bad": ("error", "not_an_image", "decode"), "dir": ("error", "read_failed", "decode"),
        "esc": ("error", "path_escapes_root", "input"),
    }
    assert row_image(out[0]).shape == (15, 20, 3) and row_image(out[1]).shape == (6, 8, 3)
    # The size before the downscale is kept: boxes normalized to it become pixels again.
    assert (out[0]["image_width"], out[0]["image_height"]) == (40, 30) and (out[1]["image_width"], out[1]["image_height"]) == (8, 6)
    assert all("data" not in r for r in out)


def test_generate_and_parse_stages_carry_provenance(tiny_models):
    cfg = load_config(None, ["engines.generator.backend=transformers", "engines.generator.dtype=float32", "sampling.max_tokens=6", "mode=specific"])
    decoded = DecodeStage(cfg.input)([
        {"shard": 1, "image_id": "a", "source": "inline:a", "data": png()},
        {"shard": 1, "image_id": "b", "source": "inline:b", "data": b""},
    ])
    prompt, gen = PromptStage(cfg), GenerateStage(cfg)
    out = run_stages([prompt, gen], decoded)
    a, b = out
    assert a["status"] == "ok" and a["token_ids"] and a["backend"] == "transformers" and a["generator_hash"]
    assert a["task"] in cfg.task_mix and a["template_id"].startswith("g") and a["instruction"].endswith(".")
    assert b["status"] == "error" and b["error_code"] == "empty" and "text" not in b
    assert "pixels" in a and "pixels" not in b  # the image stays with the row for the filters
    assert all(set(r).isdisjoint(IMAGE_COLUMNS) for r in drop_image(out))
    again = gen(prompt(decoded))  # same run seed, same image id: same prompt, seed and output
    assert (again[0]["instruction"], again[0]["seed"], again[0]["token_ids"]) == (a["instruction"], a["seed"], a["token_ids"])
    parsed = ParseStage()([{**a, "text": "Question: What is it? Answer: [0.1,0.1,0.5,0.5]", "task": "rec"}, b])
    assert parsed[0]["answer_boxes"] == [[0.1, 0.1, 0.5, 0.5]] and parsed[0]["parsed_task"] == "rec"
    assert parsed[1] == b
    bad = ParseStage()([{**a, "text": "random words", "task": "rec"}])[0]
    assert (bad["status"], bad["error_code"], bad["error_stage"], bad["text"]) == ("error", "no_question_answer", "parse", "random words")


def test_several_samples_per_image_share_one_decode_and_take_different_tasks(tiny_models):
    cfg = load_config(None, [
        "engines.generator.backend=transformers", "engines.generator.dtype=float32", "sampling.max_tokens=4", "mode=specific", "samples_per_image=3",
    ])
    decoded = DecodeStage(cfg.input)([
        {"shard": 0, "image_id": "a", "source": "inline:a", "data": png()},
        {"shard": 0, "image_id": "b", "source": "inline:b", "data": b""},
    ])
    prompt = PromptStage(cfg)
    out = run_stages([prompt, GenerateStage(cfg)], decoded)  # the contract: three rows per image, samples in order
    assert [(r["image_id"], r["sample"]) for r in out] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)]
    a = out[:3]
    assert all(r["status"] == "ok" and r["token_ids"] for r in a)
    assert len({r["task"] for r in a}) == 3 and len({r["seed"] for r in a}) == 3  # different tasks and seeds
    assert all(r["pixels"] is decoded[0]["pixels"] for r in a)  # one decoded image, shared
    assert [(r["status"], r["error_code"]) for r in out[3:]] == [("error", "empty")] * 3  # every sample accounted for
    # Sample 0 is what a one-sample run asks for the image: same prompt and seed.
    single = PromptStage(cfg.model_copy(update={"samples_per_image": 1}))(decoded[:1])[0]
    assert (single["sample"], single["instruction"], single["seed"]) == (0, a[0]["instruction"], a[0]["seed"])
    with pytest.raises(StageContractError, match=r"returned 3 rows for 6 \(lost \['b', 'b#1', 'b#2'\]\)"):
        check_contract(prompt, decoded, out[:3])


def test_the_decode_stage_reads_one_task_per_shard_in_plan_order():
    """Each uncommitted shard is a read task of its own (its unit of commit), whatever parallelism Ray Data asks."""
    import pyarrow as pa

    from genixer_ray.shard_source import ShardSource

    def load(shard, *, chunk):
        yield pa.table({"shard": [shard] * chunk})

    tasks = ShardSource([3, 5, 9], load, {"chunk": 2}).get_read_tasks(parallelism=1)
    assert [[t.to_pylist() for t in task()] for task in tasks] == [[[{"shard": k}] * 2] for k in (3, 5, 9)]


def test_a_filter_pass_decodes_each_image_once_for_all_its_samples(tmp_path, monkeypatch):
    from genixer_ray.builder import read_shard
    from genixer_ray.filter_pass import read_committed
    from genixer_ray.schema import GENERATION_SCHEMA, to_frame
    from genixer_ray.store import RunStore

    store = RunStore(str(tmp_path / "run"))
    store.write_plan(iter([{"image_id": i, "source": f"inline:{i}", "data": png()} for i in ("a", "b")]), shard_size=2, meta={})
    rows = [{"shard": 0, "image_id": i, "sample": s, "source": f"inline:{i}", "status": "ok"} for i in ("a", "b") for s in range(3)]
    store.commit_shard(0, to_frame(rows), {"by_status": {"ok": 6}, "by_error": {}, "by_task": {}})
    decoded = []
    real = DecodeStage.__call__
    monkeypatch.setattr(DecodeStage, "__call__", lambda self, batch: decoded.extend(r["image_id"] for r in batch) or real(self, batch))
    load = {"run_url": store.url, "storage_options": {}, "decode": InputConfig()}
    blocks = list(read_shard(0, load=read_committed, load_kwargs=load, chunk=4, specs=[], carry=GENERATION_SCHEMA))
    out = [r for t in blocks for r in t.to_pylist()]
    assert [(r["image_id"], r["sample"]) for r in out] == [(r["image_id"], r["sample"]) for r in rows]
    assert all(r["pixels"] and r["height"] == 30 for r in out) and decoded == ["a", "b"]
    # Each block carries each of its images once (a, a, a, b, then b, b; both photos are the same here).
    assert [len(t.column("pixels").combine_chunks().dictionary) for t in blocks] == [1, 1]


def test_rows_for_the_filter_actors_carry_each_image_once_per_block():
    """An image's samples share one copy of its bytes in the block the filter actors read;
    every row still reads its own image back, also after Ray Data concatenates blocks."""
    import pyarrow as pa

    from genixer_ray.builder import scoring_block, to_arrow
    from genixer_ray.schema import SCORING_SCHEMA

    images = [np.random.RandomState(k).randint(0, 255, (60, 80, 3), dtype=np.uint8).tobytes() for k in range(3)]
    rows = [{"shard": 0, "image_id": f"i{k}", "sample": n, "status": "ok", "pixels": images[k], "height": 60, "width": 80}
            for k in range(3) for n in range(4)]
    rows.append({"shard": 0, "image_id": "gone", "sample": 0, "status": "error", "error_code": "missing"})
    block, plain = scoring_block(rows), to_arrow(rows, SCORING_SCHEMA)
    assert block.to_pylist() == plain.to_pylist()
    pixels = block.column("pixels").combine_chunks()
    assert len(pixels.dictionary) == 3 and pixels.nbytes < 1.01 * sum(map(len, images))
    assert plain.column("pixels").nbytes >= 4 * sum(map(len, images))  # a copy per sample
    both = pa.concat_tables([block, scoring_block(rows[4:8])]).combine_chunks()
    assert [r["pixels"] for r in both.to_pylist()] == [r.get("pixels") for r in rows + rows[4:8]]
