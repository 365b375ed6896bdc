"""Wiring of the stages into a run, and the run's output on any fsspec store.

This is the single-process runner of the main job; the Ray Data wiring over generator actors
grows here (see the generation issue). Inputs are listed lazily and processed batch by batch.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import fsspec
import polars as pl

from genixer_ray.config import RunConfig
from genixer_ray.images import embedded_image_paths, list_image_folder
from genixer_ray.schema import to_frame
from genixer_ray.stages import DecodeStage, GenerateStage


def list_inputs(cfg: RunConfig) -> dict[str, Path]:
    """``{image_id: path}`` for the run's input (sorted by id, cut to ``input.limit``)."""
    found = embedded_image_paths() if cfg.input.source == "embedded" else list_image_folder(cfg.input.source)
    ids = sorted(found)[: cfg.input.limit]
    return {i: found[i] for i in ids}


def _batches(items: dict[str, Path], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for image_id, path in items.items():
        batch.append({"image_id": image_id, "source": str(path)})
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_dir(cfg: RunConfig) -> str:
    """The run's output folder URL: ``{output.path}/{name}``."""
    return f"{cfg.output.path.rstrip('/')}/{cfg.name}"


@dataclass
class RunSummary:
    """What a run did: where it wrote, and its rows counted by status and error code."""

    output: str
    rows: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_error: Counter = field(default_factory=Counter)


def write_parquet(df: pl.DataFrame, url: str, storage_options: dict | None = None) -> None:
    """Write ``df`` to ``url`` through fsspec so that the file appears whole or not at all.

    Object stores make one upload atomic; on file systems the data goes to a temporary name
    that is renamed into place.
    """
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if fs.protocol in ("file", "local") or "file" in fs.protocol:
        fs.makedirs(fs._parent(path), exist_ok=True)
        tmp = f"{path}.tmp"
        with fs.open(tmp, "wb") as f:
            df.write_parquet(f)
        fs.mv(tmp, path)
    else:
        with fs.open(path, "wb") as f:
            df.write_parquet(f)


def run_generation(cfg: RunConfig, *, log=sys.stderr) -> RunSummary:
    """Run the main job: decode the inputs, generate for each, write ``generations.parquet``.

    Args:
        cfg: the validated run configuration.
        log: where progress lines go (one line per batch, readable in a non-terminal log).
    """
    inputs = list_inputs(cfg)
    decode, generate = DecodeStage(cfg.input), GenerateStage(cfg)
    rows: list[dict] = []
    summary = RunSummary(output=f"{run_dir(cfg)}/generations.parquet")
    start = time.monotonic()
    for batch in _batches(inputs, cfg.generator.batch_size):
        done = generate(decode(batch))
        rows.extend(done)
        for r in done:
            summary.by_status[r["status"]] += 1
            if r.get("error_code"):
                summary.by_error[r["error_code"]] += 1
        rate = len(rows) / max(time.monotonic() - start, 1e-9)
        errors = ", ".join(f"{k}={v}" for k, v in sorted(summary.by_error.items())) or "none"
        print(f"[generate] {len(rows)}/{len(inputs)} rows, {rate:.2f} rows/s, errors: {errors}", file=log, flush=True)
    summary.rows = len(rows)
    write_parquet(to_frame(rows), summary.output, cfg.output.storage_options)
    return summary
