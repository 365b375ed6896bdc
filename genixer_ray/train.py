"""Fine-tuning the generator with Ray Train (Genixer step 3), and exporting a model vLLM loads.

``train_generator(cfg)``:

1. converts the configured annotation files into instruction samples and writes them as Parquet
   shards under ``{storage_path}/{name}/data`` (deterministic, so a restarted job rewrites the same);
2. runs a ``TorchTrainer``: each worker fine-tunes the LLaVA-architecture model with DDP or FSDP
   (gloo on CPU, NCCL on GPUs), vision tower frozen by default, optionally LoRA adapters on the
   language model, loss on the target tokens only; rank 0 reports a checkpoint (llava-hf layout
   or LoRA adapter, optimizer state, step) every ``checkpoint_every`` steps;
   ``FailureConfig(max_failures)`` restarts the worker group from the last checkpoint, and a new
   job with the same ``name`` and ``storage_path`` picks the run up where it stopped;
3. copies the final checkpoint's model to ``export_path``: a directory that vLLM and the
   transformers backend load directly (``generator.model`` of a generation run).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import tempfile
import threading
import time
from pathlib import Path

import polars as pl

from genixer_ray.config import TrainConfig, redacted
from genixer_ray.ray_start import ensure_ray
from genixer_ray.store import RunStore

log = logging.getLogger(__name__)

SAMPLE_SCHEMA = {
    "sample_id": pl.String, "image": pl.String, "task": pl.String, "mode": pl.String, "prompt_profile": pl.String,
    "template_id": pl.String, "instruction": pl.String, "target": pl.String,
}
_STATE = "trainer_state.json"
_OPTIM = "optimizer.pt"
_ADAPTER = "adapter"  # LoRA runs: the peft adapter (and the projector) inside each checkpoint


def prepare_data(cfg: TrainConfig, *, shard_size: int = 4096) -> tuple[RunStore, list[str], dict]:
    """Convert the sources into instruction samples; write them as Parquet shards.

    Each source's counts (records, samples, skipped records by reason with examples) are printed
    to ``log`` and returned under ``sources``.

    Returns the run's store, the shards' store paths and counts by task, mode and source.

    Raises:
        ConversionError: a source's required file is missing or unreadable, or nothing in it converts.
    """
    from genixer_ray.annotations import SourceStats, convert_source
    from genixer_ray.fixtures import resolve_fixture
    from genixer_ray.instruct import build_instruction_set

    store = RunStore(f"{cfg.storage_path.rstrip('/')}/{cfg.name}", cfg.storage_options)
    store.check_writable()
    stats: list[SourceStats] = []

    def samples():
        for n, src in enumerate(cfg.data.sources):
            files = {role: resolve_fixture(url) for role, url in src.file_roles().items()}
            st = SourceStats(f"data.sources[{n}] {src.format} ({src.path or next(iter(src.files.values()))})")
            stats.append(st)
            yield from convert_source(
                src.format, files, image_root=resolve_fixture(src.image_root), storage_options=src.storage_options,
                splits=tuple(src.splits), stats=st,
            )
            log.info(f"[data] {st.line()}")

    rows = list(build_instruction_set(
        samples(), seed=cfg.seed, specific_share=cfg.data.specific_share, task_weights=cfg.data.task_weights, profile=cfg.prompts.build(),
    ))
    if not rows:
        raise ValueError("data: the sources hold no samples")
    paths = []
    for k in range(0, len(rows), shard_size):
        rel = f"data/part-{k // shard_size:06d}.parquet"
        store.write_frame(rel, pl.DataFrame(rows[k : k + shard_size], schema=SAMPLE_SCHEMA))
        paths.append(store.path(rel))
    df = pl.DataFrame(rows, schema=SAMPLE_SCHEMA)
    counts = {
        "samples": df.height,
        "by_task": dict(df.group_by("task").len().sort("task").iter_rows()),
        "by_mode": dict(df.group_by("mode").len().sort("mode").iter_rows()),
        "sources": [st.as_dict() for st in stats],
    }
    return store, paths, counts


@functools.lru_cache(maxsize=256)
def _load_image(url: str, max_side: int, options_json: str):
    # Small instruction sets revisit the same images every epoch: decode each once per worker.
    import fsspec
    from PIL import Image

    from genixer_ray.images import decode_image

    with fsspec.open(url, "rb", **json.loads(options_json)) as f:
        return Image.fromarray(decode_image(f.read(), max_side=max_side))


def image_options(sources) -> dict[str, str]:
    """``{image_root: storage options as JSON}`` of the training sources (their images' credentials)."""
    from genixer_ray.fixtures import resolve_fixture

    return {resolve_fixture(s.image_root).rstrip("/") + "/": json.dumps(s.storage_options, sort_keys=True) for s in sources}


def _options_for(url: str, options_by_root: dict[str, str]) -> str:
    # The longest image root the image lies under: nested roots each keep their own credentials.
    roots = [r for r in options_by_root if url.startswith(r)]
    return options_by_root[max(roots, key=len)] if roots else "{}"


def collate(processor, rows: list[dict], *, max_side: int, options_by_root: dict[str, str] | None = None):
    """Processor inputs and labels for a batch; labels are -100 except on the target tokens.

    The prompt is the model's chat template around the instruction (as at generation time);
    the target follows it and ends with the end-of-sequence token. Each image is read with the
    storage options of the source whose image root holds it (:func:`image_options`).
    """
    from genixer_ray.engines.base import chat_prompt

    images = [_load_image(r["image"], max_side, _options_for(r["image"], options_by_root or {})) for r in rows]
    prompts = [chat_prompt(processor, r["instruction"]) for r in rows]
    eos = processor.tokenizer.eos_token
    full = [f"{p} {r['target']}{eos}" for p, r in zip(prompts, rows)]
    processor.tokenizer.padding_side = "right"
    inputs = processor(images=images, text=full, padding=True, return_tensors="pt")
    prompt_only = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    labels = inputs["input_ids"].clone()
    labels[inputs["attention_mask"] == 0] = -100
    for i, n in enumerate(prompt_only["attention_mask"].sum(dim=1).tolist()):
        labels[i, :n] = -100  # the prompt (image tokens included) is context, not target
    inputs["labels"] = labels
    return inputs


def _full_state(model, optimizer, *, fsdp: bool, offload: bool) -> tuple[dict | None, dict]:
    """The whole model's and optimizer's state; every rank must call it (FSDP gathers shards).

    Not FSDP-wrapped: the replica's own state (``None`` for the model: read it from the module).
    FSDP: full state dicts gathered from the shards, keyed by parameter names.
    """
    if not fsdp:
        return None, optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    # Offloading the gathered state to host memory crashes torch on CPU-only workers (gloo);
    # on GPUs it keeps the full weights out of accelerator memory.
    options = StateDictOptions(full_state_dict=True, cpu_offload=offload)
    return get_state_dict(model, optimizer, options=options)


def _save_checkpoint(model, processor, state: dict | None, optim_state: dict, step: int, loss: float, out: Path, *, final: bool) -> None:
    """Full fine-tuning: the weights in the llava-hf layout. LoRA: the adapter, and on the final
    step also the merged weights (what the export copies, and what vLLM loads)."""
    import torch

    from genixer_ray.checkpoints import save_llava_hf

    torch.save(optim_state, out / _OPTIM)
    (out / _STATE).write_text(json.dumps({"step": step, "loss": loss}))
    if not hasattr(model, "peft_config"):
        save_llava_hf(model, out, processor=processor, state=state)
        return
    model.save_pretrained(out / _ADAPTER)
    processor.save_pretrained(out)
    if final:
        save_llava_hf(model.merge_and_unload(), out, processor=processor)


def _with_lora(model, cfg: TrainConfig, adapter: Path | None):
    """Wrap ``model`` with LoRA adapters on its language model (new, or trained ones to resume)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    lora = cfg.model.lora
    if adapter is not None:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    targets = "|".join(lora.target_modules)
    return get_peft_model(
        model,
        LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            # A regex, so that the vision tower's layers of the same names get no adapters.
            target_modules=rf".*language_model\..*\.({targets})",
            modules_to_save=["multi_modal_projector"],  # Genixer trains the projector fully
        ),
    )


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train worker function: load (or resume), train to ``max_steps``, checkpoint."""
    import ray.train
    import torch
    from ray.train.torch import prepare_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from genixer_ray.models import resolve_model

    cfg = TrainConfig.model_validate_json(config["cfg_json"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.manual_seed(cfg.seed + rank)
    ckpt = ray.train.get_checkpoint()
    start_step = 0
    with (ckpt.as_directory() if ckpt else tempfile.TemporaryDirectory()) as ckpt_dir:
        if ckpt:
            start_step = json.loads((Path(ckpt_dir) / _STATE).read_text())["step"]
        if start_step >= cfg.optim.max_steps:  # a finished run started again: nothing left to do
            ray.train.report({"step": start_step, "loss": float("nan"), "start_step": start_step})
            return
        # LoRA checkpoints hold only the adapter: the base weights come from the base model.
        source = ckpt_dir if ckpt and not cfg.model.lora else resolve_model(cfg.model.base)
        processor = AutoProcessor.from_pretrained(source)
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=getattr(torch, cfg.model.dtype))
        if cfg.model.lora:
            model = _with_lora(model, cfg, Path(ckpt_dir) / _ADAPTER if ckpt else None)
        optim_state = torch.load(Path(ckpt_dir) / _OPTIM) if ckpt else None
    if cfg.model.freeze_vision and not cfg.model.lora:  # under LoRA only adapters and projector train
        for p in model.model.vision_tower.parameters():
            p.requires_grad_(False)
    fsdp = cfg.scaling.strategy == "fsdp" and ctx.get_world_size() > 1
    if fsdp:
        # Ray's prepare_model refuses FSDP without CUDA, but torch's FSDP also runs on CPU (gloo),
        # which is how the tests exercise this path: move the model with Ray, wrap it here.
        from torch.distributed.fsdp import FullyShardedDataParallel

        model = prepare_model(model, parallel_strategy=None)
        # use_orig_params: the frozen vision tower and the trained weights may share a flat shard.
        model = FullyShardedDataParallel(model, use_orig_params=True, device_id=next(model.parameters()).device)
    else:
        model = prepare_model(model)
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)  # under FSDP: this worker's shard
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    if optim_state is not None and fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, optim_state, options=StateDictOptions(full_state_dict=True))
    elif optim_state is not None:
        optimizer.load_state_dict(optim_state)
    warm = max(cfg.optim.warmup_steps, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm), last_epoch=start_step - 1)
    device = next(model.parameters()).device
    # The worker's share of samples (paths and text, not images) is read once through Ray Data
    # and kept: epochs are then reshuffled locally, reproducibly from (seed, rank, epoch), which
    # also lets a resumed run skip exactly the batches it had done.
    options_by_root = image_options(cfg.data.sources)
    rows_all = list(ray.train.get_dataset_shard("train").iter_rows())
    if not rows_all:
        raise RuntimeError(f"worker {rank} received no training data")
    bs = cfg.optim.batch_size
    batches_per_epoch = max(1, len(rows_all) // bs)
    step, loss_value = start_step, float("nan")
    progress = config.get("progress") if rank == 0 else None
    started, last_sent = time.monotonic(), 0.0
    model.train()
    while step < cfg.optim.max_steps:
        epoch, offset = divmod(step, batches_per_epoch)
        order = list(range(len(rows_all)))
        random.Random(cfg.seed * 1_000_003 + rank * 7919 + epoch).shuffle(order)
        for b in range(offset, batches_per_epoch):
            rows = [rows_all[i] for i in order[b * bs : (b + 1) * bs] or order[:bs]]
            inputs = collate(processor, rows, max_side=cfg.data.max_side, options_by_root=options_by_root).to(device)
            inputs["pixel_values"] = inputs["pixel_values"].to(getattr(torch, cfg.model.dtype))
            loss = model(**inputs).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if fsdp:  # the norm of the whole gradient, not of this worker's shard
                model.clip_grad_norm_(cfg.optim.grad_clip)
            else:
                torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            loss_value = float(loss.detach())
            last = step == cfg.optim.max_steps
            metrics = {"step": step, "loss": loss_value, "start_step": start_step, "trainable_params": n_trainable}
            now = time.monotonic()
            if progress is not None and (now - last_sent >= PROGRESS_EVERY_S or last):
                last_sent = now
                rate = (step - start_step) / max(now - started, 1e-9)
                _send_progress(progress, step=step, max_steps=cfg.optim.max_steps, loss=loss_value,
                               steps_per_s=rate, samples_per_s=rate * bs * ctx.get_world_size())
            if step % cfg.checkpoint_every == 0 or last:
                with tempfile.TemporaryDirectory() as tmp:
                    checkpoint = None
                    state, optim_state = _full_state(model, optimizer, fsdp=fsdp, offload=cfg.scaling.use_gpu)
                    if rank == 0:  # one copy of the weights
                        unwrapped = model.module if hasattr(model, "module") else model
                        _save_checkpoint(unwrapped, processor, state, optim_state, step, loss_value, Path(tmp), final=last)
                        checkpoint = ray.train.Checkpoint.from_directory(tmp)
                    ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"checkpoint_{step:06d}")
            if last:
                break


PROGRESS_EVERY_S = 10.0


def _send_progress(queue, **fields) -> None:
    # Never block or fail training for a progress line: the driver may be gone (a killed job).
    try:
        queue.put_nowait(fields)
    except Exception:  # noqa: BLE001 - a full queue or a dead queue actor costs one line
        pass


def _print_progress(queue, done: threading.Event) -> None:
    """Driver thread: print rank 0's progress reports until training ends."""
    from ray.util.queue import Empty

    from genixer_ray.writer import format_duration

    while not done.is_set():
        try:
            p = queue.get(timeout=1.0)
        except Empty:
            continue
        except Exception:  # noqa: BLE001 - the queue actor went away with the cluster
            return
        left = (p["max_steps"] - p["step"]) / p["steps_per_s"] if p["steps_per_s"] > 0 else 0.0
        log.info(
            f"[train] step {p['step']}/{p['max_steps']}, loss {p['loss']:.3f}, {p['samples_per_s']:.1f} samples/s, "
            f"ETA {format_duration(left)}"
        )


def train_generator(cfg: TrainConfig) -> dict:
    """Fine-tune the generator on Ray Train and export it; returns a summary with ``export_path``.

    Raises:
        ConfigError / ConversionError: bad sources, before any worker starts.
        RuntimeError: training failed beyond ``scaling.max_failures`` restarts.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    store, paths, counts = prepare_data(cfg)
    log.info(f"[train] {counts['samples']} samples by task {counts['by_task']}, by mode {counts['by_mode']}")
    ensure_ray(cfg.scaling.ray_address, cfg.scaling.num_workers * cfg.scaling.cpus_per_worker)
    fs = store.arrow_filesystem()
    dataset = ray.data.read_parquet(paths, filesystem=fs)
    # With a storage_filesystem, Ray Train takes paths inside it (no "s3://" prefix).
    storage = os.path.abspath(cfg.storage_path) if store.is_local else store.root.rsplit("/", 1)[0]
    from ray.util.queue import Queue

    # Rank 0 reports step, loss and speed through a queue; a driver thread prints them.
    progress = Queue(maxsize=100, actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg_json": cfg.model_dump_json(), "progress": progress},
        torch_config=TorchConfig(backend="nccl" if cfg.scaling.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=f"{cfg.name}-ray",
            storage_path=storage,
            storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=cfg.scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
        ),
        datasets={"train": dataset},
    )
    done = threading.Event()
    printer = threading.Thread(target=_print_progress, args=(progress, done), daemon=True)
    printer.start()
    try:
        result = trainer.fit()
    finally:
        done.set()
        printer.join()
        progress.shutdown()
    if result.error:
        raise RuntimeError(f"training run {cfg.name!r} failed: {result.error}")
    export = cfg.export_path or (store.path("model") if store.is_local else store.uri("model"))
    with result.checkpoint.as_directory() as d:
        _export(Path(d), export, cfg.storage_options)
    summary = {
        "name": cfg.name, "export_path": export, "steps": result.metrics["step"], "loss": result.metrics["loss"],
        "start_step": result.metrics["start_step"], "trainable_params": result.metrics.get("trainable_params"),
        **counts, "config": redacted(cfg),
    }
    store.write_json("train_summary.json", summary)
    log.info(f"[train] {summary['steps']} steps, final loss {summary['loss']:.3f}; model exported to {export}")
    return summary


def _export(src: Path, dest: str, storage_options: dict) -> None:
    """Copy a checkpoint's model files (not the optimizer) to ``dest`` on any fsspec store."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(dest, **storage_options)
    fs.makedirs(root, exist_ok=True)
    for p in sorted(src.iterdir()):
        if p.is_file() and p.name not in (_OPTIM, _STATE):
            fs.put_file(str(p), f"{root.rstrip('/')}/{p.name}")
