"""Fine-tuning the tiny generator with Ray Train: it learns the format; a killed worker resumes."""

import json
import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from genixer_ray.config import PRACTICE_SOURCES, EngineConfig, SamplingConfig, TrainConfig, load_config
from genixer_ray.engines.base import GenerationRequest, get_generator
from genixer_ray.images import decode_image, embedded_image_paths
from genixer_ray.prompts import PROFILES, choose_prompt
from genixer_ray.tasks import ParseError, parse_output
from genixer_ray.train import train_generator

pytestmark = pytest.mark.ray

TRAINED = {"common_vqa": 1.0, "multi_choice_vqa": 1.0, "rec": 1.0, "reg": 1.0}
PRACTICE = json.dumps(PRACTICE_SOURCES)  # GQA questions, Shikra's REC JSON Lines, A-OKVQA: answers untrue, format right
PRACTICE_VQA = json.dumps(PRACTICE_SOURCES[:1])
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def parse_rate(model: str) -> float:
    """Share of greedy outputs on held-out photos (never in the training data) that parse."""
    paths = embedded_image_paths()
    held_out = [decode_image(paths[k].read_bytes(), max_side=448) for k in ("hubble_deep_field", "retina")]
    gen = get_generator(EngineConfig(model=model, backend="transformers", dtype="float32", max_model_len=512))
    choices = [choose_prompt(f"held-out-{i}", seed=3, mode="specific", task_mix=TRAINED, profile=PROFILES["genixer-ray"]) for i in range(24)]
    reqs = [GenerationRequest(held_out[i % 2], c.instruction, SamplingConfig(temperature=0.0, max_tokens=96)) for i, c in enumerate(choices)]
    ok = 0
    for res, c in zip(gen.generate(reqs), choices):
        try:
            parse_output(res.text, c.task)
            ok += 1
        except ParseError:
            pass
    return ok / len(reqs)


def test_fine_tuning_learns_the_output_format(ray_session, tmp_path, tiny_models):
    before = parse_rate("tiny")
    # configs/train.yaml (the demo's) with the practice set: one REC and one REG phrasing, which a
    # tiny model learns in 200 steps.
    cfg = load_config(CONFIGS / "train.yaml", [f"storage_path={tmp_path}", f"data.sources={PRACTICE}"], kind=TrainConfig)
    assert cfg.optim.max_steps == 200 and cfg.prompts.rec_questions == ["Where is <expr>?"]
    summary = train_generator(cfg)
    assert summary["steps"] == 200 and summary["start_step"] == 0
    assert set(summary["by_task"]) == set(TRAINED)
    after = parse_rate(summary["export_path"])
    print(f"parse rate on held-out photos: {before:.2f} before, {after:.2f} after")
    assert before <= 0.1
    assert after >= 0.9


def kill_a_worker_after(run_dir: Path, checkpoint: str, done: threading.Event, killed: list) -> None:
    """SIGKILL one Ray Train worker process once ``checkpoint`` is registered in the run's snapshot."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    while not done.is_set() and not (snapshot.exists() and checkpoint in snapshot.read_text()):
        time.sleep(0.05)
    for proc in psutil.process_iter(["cmdline"]):
        if "RayTrainWorker" in " ".join(proc.info["cmdline"] or []) and proc.pid != os.getpid():
            proc.kill()
            killed.append(proc.pid)
            return


def test_killed_worker_resumes_from_the_last_checkpoint(ray_session, tmp_path, tiny_models):
    cfg = load_config(
        None,
        [f"storage_path={tmp_path}", f"data.sources={PRACTICE_VQA}",
         "optim.max_steps=60", "checkpoint_every=20", "scaling.max_failures=2", "name=killed"],
        kind=TrainConfig,
    )
    done, killed = threading.Event(), []
    killer = threading.Thread(target=kill_a_worker_after, args=(tmp_path / "killed-ray", "checkpoint_000020", done, killed))
    killer.start()
    try:
        summary = train_generator(cfg)
    finally:
        done.set()
        killer.join()
    assert killed, "no worker was killed"
    assert summary["steps"] == 60  # the same number of steps as an uninterrupted run
    assert summary["start_step"] in (20, 40)  # the final attempt started from a checkpoint, not from scratch
    assert (Path(summary["export_path"]) / "model.safetensors").exists()


def test_restarted_job_with_the_same_name_continues(ray_session, tmp_path, tiny_models):
    """Kill the training driver (the whole job) after a checkpoint; the same command continues."""
    import subprocess
    import sys

    args = [f"storage_path={tmp_path}", f"data.sources={PRACTICE_VQA}",
            "optim.max_steps=60", "checkpoint_every=20", "name=restarted"]
    address = ray_session.get_runtime_context().gcs_address
    proc = subprocess.Popen(
        [sys.executable, "-m", "genixer_ray.cli", "train", *args, f"ray.address={address}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    snapshot = tmp_path / "restarted-ray" / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline and not (snapshot.exists() and "checkpoint_000020" in snapshot.read_text()):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert "checkpoint_000060" not in snapshot.read_text(), "the job must be killed before it finished"
    summary = train_generator(load_config(None, args, kind=TrainConfig))
    assert summary["steps"] == 60 and summary["start_step"] >= 20


def full_fine_tuning_params(model_dir) -> int:
    """Weights that full fine-tuning trains: all but the (frozen) vision tower's."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(model_dir))
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("model.vision_tower."))


def test_lora_trains_adapters_resumes_and_exports_a_merged_model(ray_session, tmp_path, tiny_models):
    """LoRA: adapters on the language model plus the projector train; the export is a plain model."""
    import torch
    from safetensors.torch import load_file

    args = [f"storage_path={tmp_path}", f"data.sources={PRACTICE_VQA}",
            "model.lora={r: 4, alpha: 8}", "checkpoint_every=10", "name=lora"]
    first = train_generator(load_config(None, [*args, "optim.max_steps=10"], kind=TrainConfig))
    assert first["trainable_params"] < full_fine_tuning_params(tiny_models.generator) / 3
    # The same command with more steps continues from the adapter checkpoint.
    resumed = train_generator(load_config(None, [*args, "optim.max_steps=20"], kind=TrainConfig))
    assert resumed["start_step"] == 10 and resumed["steps"] == 20

    base = load_file(str(Path(tiny_models.generator) / "model.safetensors"))
    merged = load_file(str(Path(resumed["export_path"]) / "model.safetensors"))
    assert set(merged) == set(base)  # no adapter weights left: a plain llava-hf checkpoint
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert any(".self_attn.q_proj." in k and k.startswith("language_model.") for k in changed)
    assert any(k.startswith("multi_modal_projector.") for k in changed)
    assert not any(k.startswith("vision_tower.") for k in changed)
    assert not any("embed_tokens" in k or "lm_head" in k for k in changed)  # no adapters there
    gen = get_generator(EngineConfig(model=resumed["export_path"], backend="transformers", dtype="float32", max_model_len=512))
    img = decode_image(embedded_image_paths()["rocket"].read_bytes(), max_side=448)
    out = gen.generate([GenerationRequest(img, "Ask a question.", SamplingConfig(temperature=0.0, max_tokens=8))])[0]
    assert out.error_code is None and out.token_ids


def test_fsdp_shards_the_weights_resumes_and_exports(ray_session, tmp_path, tiny_models):
    """FSDP over gloo: each worker holds a shard; checkpoints gather the whole model; resume works."""
    from safetensors.torch import load_file

    args = [f"storage_path={tmp_path}", f"data.sources={PRACTICE_VQA}",
            "checkpoint_every=5", "name=fsdp", "scaling.strategy=fsdp"]
    first = train_generator(load_config(None, [*args, "optim.max_steps=5"], kind=TrainConfig))
    # Rank 0 holds about half of the trained weights (2 workers), not a full replica.
    full = full_fine_tuning_params(tiny_models.generator)
    assert 0.3 * full < first["trainable_params"] < 0.7 * full
    resumed = train_generator(load_config(None, [*args, "optim.max_steps=10"], kind=TrainConfig))
    assert resumed["start_step"] == 5 and resumed["steps"] == 10 and resumed["loss"] == resumed["loss"]  # not NaN
    exported = load_file(str(Path(resumed["export_path"]) / "model.safetensors"))
    base = load_file(str(Path(tiny_models.generator) / "model.safetensors"))
    assert {k: v.shape for k, v in exported.items()} == {k: v.shape for k, v in base.items()}  # gathered whole
    gen = get_generator(EngineConfig(model=resumed["export_path"], backend="transformers", dtype="float32", max_model_len=512))
    img = decode_image(embedded_image_paths()["rocket"].read_bytes(), max_side=448)
    out = gen.generate([GenerationRequest(img, "Ask a question.", SamplingConfig(temperature=0.0, max_tokens=8))])[0]
    assert out.error_code is None and out.token_ids


def test_training_storage_on_s3_checkpoints_resumes_and_exports(ray_session, s3, tiny_models):
    """storage_path on an S3 endpoint: data, checkpoints and the export live there; resume reads them."""
    import json

    import fsspec

    so = json.dumps(s3["storage_options"])
    args = [f"storage_path=s3://{s3['bucket']}/train", f"storage_options={so}", "checkpoint_every=5", "name=on-s3",
            f"data.sources={PRACTICE_VQA}"]
    first = train_generator(load_config(None, [*args, "optim.max_steps=5"], kind=TrainConfig))
    resumed = train_generator(load_config(None, [*args, "optim.max_steps=10"], kind=TrainConfig))
    assert resumed["start_step"] == 5 and resumed["steps"] == 10
    assert first["export_path"] == resumed["export_path"] == f"s3://{s3['bucket']}/train/on-s3/model"
    fs = fsspec.filesystem("s3", **s3["storage_options"])
    root = f"{s3['bucket']}/train"
    assert fs.exists(f"{root}/on-s3-ray/checkpoint_000010/model.safetensors")
    assert fs.ls(f"{root}/on-s3/data") and fs.exists(f"{root}/on-s3/train_summary.json")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.rsplit("/", 1)[-1] for p in fs.ls(f"{root}/on-s3/model")}
