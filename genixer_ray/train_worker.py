"""What each Ray Train worker runs: batches (images read with their source's credentials),
the model (full, FSDP-sharded or LoRA), the loop, checkpoints and progress reports.

:func:`train_loop_per_worker` is the ``TorchTrainer``'s function; :mod:`genixer_ray.train`
prepares the data, starts the trainer and exports the result.
"""

from __future__ import annotations

import functools
import json
import random
import tempfile
import time
from pathlib import Path

from genixer_ray.config import TrainConfig

PROGRESS_EVERY_S = 10.0  # rank 0 reports step, loss and speed this often
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
_ADAPTER = "adapter"  # LoRA runs: the peft adapter (and the projector) inside each checkpoint


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

    torch.save(optim_state, out / OPTIMIZER_FILE)
    (out / STATE_FILE).write_text(json.dumps({"step": step, "loss": loss}))
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
            start_step = json.loads((Path(ckpt_dir) / STATE_FILE).read_text())["step"]
        if start_step >= cfg.optim.max_steps:  # a finished run started again: nothing left to do
            ray.train.report({"step": start_step, "loss": float("nan"), "start_step": start_step})
            return
        # LoRA checkpoints hold only the adapter: the base weights come from the base model.
        source = ckpt_dir if ckpt and not cfg.model.lora else resolve_model(cfg.model.base)
        processor = AutoProcessor.from_pretrained(source)
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=getattr(torch, cfg.model.dtype))
        if cfg.model.lora:
            model = _with_lora(model, cfg, Path(ckpt_dir) / _ADAPTER if ckpt else None)
        optim_state = torch.load(Path(ckpt_dir) / OPTIMIZER_FILE) if ckpt else None
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



def _send_progress(queue, **fields) -> None:
    # Never block or fail training for a progress line: the driver may be gone (a killed job).
    try:
        queue.put_nowait(fields)
    except Exception:  # noqa: BLE001 - a full queue or a dead queue actor costs one line
        pass
