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

import logging
import os
import threading
from pathlib import Path

import polars as pl

from genixer_ray.config import ConfigError, TrainConfig, redacted
from genixer_ray.errors import RunFailed
from genixer_ray.ray_start import ensure_ray
from genixer_ray.store import RunStore
from genixer_ray.train_worker import OPTIMIZER_FILE, STATE_FILE, train_loop_per_worker

log = logging.getLogger(__name__)

SAMPLE_SCHEMA = {
    "sample_id": pl.String, "image": pl.String, "task": pl.String, "mode": pl.String, "prompt_profile": pl.String,
    "template_id": pl.String, "instruction": pl.String, "target": pl.String,
}
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
        raise ConfigError("data: the sources hold no samples")
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
    ensure_ray(cfg.ray.address, cfg.scaling.num_workers * cfg.scaling.cpus_per_worker)
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
            num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu, accelerator_type=cfg.scaling.accelerator_type,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker, **cfg.scaling.resources_per_worker},
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
        raise RunFailed(f"training run {cfg.name!r} failed: {result.error}")
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
        if p.is_file() and p.name not in (OPTIMIZER_FILE, STATE_FILE):
            fs.put_file(str(p), f"{root.rstrip('/')}/{p.name}")
