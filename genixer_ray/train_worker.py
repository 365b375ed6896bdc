"""What each Ray Train worker runs: the model (full, FSDP-sharded or LoRA), the loop over batches
(:mod:`genixer_ray.train_batches`), checkpoints and progress reports.

:func:`train_loop_per_worker` is the ``TorchTrainer``'s function, made of parts that run without
Ray Train: :func:`restore` (a checkpoint's step, weights, adapter and optimizer state),
:func:`build_model`, :func:`epoch_order` and :func:`checkpoint`. :mod:`genixer_ray.train`
prepares the data, starts the trainer and exports the result.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from genixer_ray.config import TrainConfig
from genixer_ray.errors import RunFailed
from genixer_ray.seeding import derive_seed
from genixer_ray.train_batches import collate, image_options

PROGRESS_EVERY_S = 10.0  # rank 0 reports step, loss and speed this often
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
_ADAPTER = "adapter"  # LoRA runs: the peft adapter (and the projector) inside each checkpoint


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


@dataclass
class Restored:
    """What a worker starts from: the step, where the weights come from, the LoRA adapter and the
    optimizer state of a checkpoint (``step`` 0 and the base model without one)."""

    step: int
    weights: str
    adapter: Path | None = None
    optim_state: dict | None = None


def restore(cfg: TrainConfig, ckpt_dir: Path | None) -> Restored:
    """Read the checkpoint in ``ckpt_dir`` (``None``: start from ``cfg.model.base``).

    A LoRA checkpoint holds only the adapter (and the projector): its base weights come from the
    base model. Call it while ``ckpt_dir`` exists; the model is loaded from ``weights`` by
    :func:`build_model` in the same scope.
    """
    import torch

    from genixer_ray.models import resolve_model

    if ckpt_dir is None:
        return Restored(0, resolve_model(cfg.model.base))
    step = json.loads((ckpt_dir / STATE_FILE).read_text())["step"]
    weights = resolve_model(cfg.model.base) if cfg.model.lora else str(ckpt_dir)
    adapter = ckpt_dir / _ADAPTER if cfg.model.lora else None
    return Restored(step, weights, adapter, torch.load(ckpt_dir / OPTIMIZER_FILE))


def build_model(cfg: TrainConfig, restored: Restored):
    """The processor and the model to train (not yet wrapped for data parallelism): weights from
    ``restored``, LoRA adapters when configured, the vision tower frozen when configured."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(restored.weights)
    model = AutoModelForImageTextToText.from_pretrained(restored.weights, dtype=getattr(torch, cfg.model.dtype))
    if cfg.model.lora:
        model = _with_lora(model, cfg, restored.adapter)
    elif cfg.model.freeze_vision:  # under LoRA only adapters and projector train
        for p in model.model.vision_tower.parameters():
            p.requires_grad_(False)
    return processor, model


def epoch_order(n: int, *, seed: int, rank: int, epoch: int) -> list[int]:
    """The order in which a worker visits its ``n`` samples in ``epoch``: a shuffle seeded by
    (seed, rank, epoch) through :func:`~genixer_ray.seeding.derive_seed`, so a resumed run skips
    exactly the batches it had done."""
    order = list(range(n))
    random.Random(derive_seed(seed, f"train/rank{rank}/epoch{epoch}")).shuffle(order)
    return order


def checkpoint(model, optimizer, processor, *, step: int, loss: float, out: Path, rank: int, fsdp: bool, offload: bool, final: bool) -> bool:
    """Write the checkpoint of ``step`` into ``out`` on rank 0 (one copy of the weights); every
    rank must call it, since FSDP gathers the shards. Returns whether this rank wrote it."""
    state, optim_state = _full_state(model, optimizer, fsdp=fsdp, offload=offload)
    if rank != 0:
        return False
    unwrapped = model.module if hasattr(model, "module") else model
    _save_checkpoint(unwrapped, processor, state, optim_state, step, loss, out, final=final)
    return True


def _parallel(model, *, fsdp: bool):
    """``model`` placed and wrapped by Ray Train: DDP, or FSDP (also on CPU, over gloo)."""
    from ray.train.torch import prepare_model

    if not fsdp:
        return prepare_model(model)
    # Ray's prepare_model refuses FSDP without CUDA, but torch's FSDP also runs on CPU (gloo),
    # which is how the tests exercise this path: move the model with Ray, wrap it here.
    from torch.distributed.fsdp import FullyShardedDataParallel

    model = prepare_model(model, parallel_strategy=None)
    # use_orig_params: the frozen vision tower and the trained weights may share a flat shard.
    return FullyShardedDataParallel(model, use_orig_params=True, device_id=next(model.parameters()).device)


def _optimizer(model, cfg: TrainConfig, restored: Restored, *, fsdp: bool):
    """AdamW over the trainable weights (its state restored) and the warm-up schedule at the restored step."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    if restored.optim_state is not None and fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, restored.optim_state, options=StateDictOptions(full_state_dict=True))
    elif restored.optim_state is not None:
        optimizer.load_state_dict(restored.optim_state)
    warm = max(cfg.optim.warmup_steps, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm), last_epoch=restored.step - 1)
    return params, optimizer, scheduler


def _step(model, inputs, params, optimizer, scheduler, *, grad_clip: float, fsdp: bool) -> float:
    """One optimizer step on ``inputs``; returns the batch's loss."""
    import torch

    loss = model(**inputs).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if fsdp:  # the norm of the whole gradient, not of this worker's shard
        model.clip_grad_norm_(grad_clip)
    else:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train worker function: load (or resume), train to ``max_steps``, checkpoint."""
    import ray.train
    import torch

    cfg = TrainConfig.model_validate_json(config["cfg_json"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.manual_seed(cfg.seed + rank)
    ckpt = ray.train.get_checkpoint()
    with (ckpt.as_directory() if ckpt else tempfile.TemporaryDirectory()) as ckpt_dir:
        restored = restore(cfg, Path(ckpt_dir) if ckpt else None)
        if restored.step >= cfg.optim.max_steps:  # a finished run started again: nothing left to do
            ray.train.report({"step": restored.step, "loss": float("nan"), "start_step": restored.step})
            return
        processor, model = build_model(cfg, restored)
    fsdp = cfg.scaling.strategy == "fsdp" and ctx.get_world_size() > 1
    model = _parallel(model, fsdp=fsdp)
    params, optimizer, scheduler = _optimizer(model, cfg, restored, fsdp=fsdp)
    n_trainable = sum(p.numel() for p in params)  # under FSDP: this worker's shard
    device = next(model.parameters()).device
    # The worker's share of samples (paths and text, not images) is read once through Ray Data
    # and kept: epochs are then reshuffled locally (epoch_order).
    options_by_root = image_options(cfg.data.sources)
    rows_all = list(ray.train.get_dataset_shard("train").iter_rows())
    if not rows_all:
        raise RunFailed(f"worker {rank} received no training data")
    bs = cfg.optim.batch_size
    batches_per_epoch = max(1, len(rows_all) // bs)
    start_step = step = restored.step
    progress = config.get("progress") if rank == 0 else None
    started, last_sent = time.monotonic(), 0.0
    model.train()
    while step < cfg.optim.max_steps:
        epoch, offset = divmod(step, batches_per_epoch)
        order = epoch_order(len(rows_all), seed=cfg.seed, rank=rank, epoch=epoch)
        for b in range(offset, batches_per_epoch):
            rows = [rows_all[i] for i in order[b * bs : (b + 1) * bs] or order[:bs]]
            inputs = collate(processor, rows, max_side=cfg.data.max_side, options_by_root=options_by_root).to(device)
            inputs["pixel_values"] = inputs["pixel_values"].to(getattr(torch, cfg.model.dtype))
            loss_value = _step(model, inputs, params, optimizer, scheduler, grad_clip=cfg.optim.grad_clip, fsdp=fsdp)
            step += 1
            last = step == cfg.optim.max_steps
            now = time.monotonic()
            if progress is not None and (now - last_sent >= PROGRESS_EVERY_S or last):
                last_sent = now
                rate = (step - start_step) / max(now - started, 1e-9)
                _send_progress(progress, step=step, max_steps=cfg.optim.max_steps, loss=loss_value,
                               steps_per_s=rate, samples_per_s=rate * bs * ctx.get_world_size())
            if step % cfg.checkpoint_every == 0 or last:
                metrics = {"step": step, "loss": loss_value, "start_step": start_step, "trainable_params": n_trainable}
                with tempfile.TemporaryDirectory() as tmp:
                    wrote = checkpoint(model, optimizer, processor, step=step, loss=loss_value, out=Path(tmp), rank=rank,
                                       fsdp=fsdp, offload=cfg.scaling.use_gpu, final=last)
                    saved = ray.train.Checkpoint.from_directory(tmp) if wrote else None
                    ray.train.report(metrics, checkpoint=saved, checkpoint_dir_name=f"checkpoint_{step:06d}")
            if last:
                break


def _send_progress(queue, **fields) -> None:
    # Never block or fail training for a progress line: the driver may be gone (a killed job).
    try:
        queue.put_nowait(fields)
    except Exception:  # noqa: BLE001 - a full queue or a dead queue actor costs one line
        pass
