"""``genixer-ray publish RUN OUT``: a run's kept rows as a dataset others load in one line.

Layout of ``OUT`` (any fsspec URL)::

    README.md                          the dataset card (genixer_ray.card), written last
    data/{task}/train-00000.parquet    the 'datasets' layout: one folder per task, so each task is
                                       a config of the card's ``configs:`` and ``default`` is all
    webdataset/train-00000.tar         the 'webdataset' layout: {key}.{jpg,png,webp} + {key}.json
    _publish/part-00000.json           one marker per part: the run shards it holds, its files'
                                       rows and sha256
    _publish/publish.json              written after the card: what was published, from where

**Parts.** Committed run shards ``k`` are grouped into parts ``k // shards_per_file``; a part is
written file by file, then its marker. A part whose marker names the same run shards (by their
commit markers' sha256) and the same options is done; any other is written again under the same
names, so a kill mid-publish and a re-run leave no duplicate or partial file, and a run that gained
shards republishes only the parts they fall in. Files of ours that no marker names (an option
changed, a kill before a marker) are removed at the end; ``verify OUT`` checks all of it.

**Rows.** One row per sample of a view (:mod:`genixer_ray.views`: ``kept`` by default), built by
:mod:`genixer_ray.published_rows` (the columns, their ``datasets`` types, the stored image). With
``publish.cluster_cap`` N, at most N rows of each near-duplicate question cluster of a task
(:mod:`genixer_ray.question_clusters`), the highest ``publish.cluster_score`` first; the card
counts the others.

Memory is bounded by one run shard (its rows and their images): shards are read a few at a time
(overlapped on an object store) and written as they come. The cluster cap first reads the view a
shard at a time and holds its distinct questions and 24 bytes per row (ref, node, score).
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np

from genixer_ray.config import ConfigError, PublishConfig, build_config, redact
from genixer_ray.errors import NotARunError
from genixer_ray.export import read_source
from genixer_ray.overlap import overlapped
from genixer_ray.published_files import PartWriter, empty_file
from genixer_ray.published_rows import published_row, stored_image
from genixer_ray.question_clusters import capped_refs, view_rows
from genixer_ray.store import RunStore, source_run
from genixer_ray.views import resolve_view

log = logging.getLogger(__name__)

MARKERS = "_publish"
FORMAT_VERSION = 1  # of the published rows; a change republishes every part
# Files of ours under OUT (anything else there is reported by verify, and never removed).
OWN_FILE = re.compile(r"data/[a-z_]+/train-\d{5}\.parquet|webdataset/train-\d{5}\.tar")


def _shard_records(store: RunStore, k: int, condition: str, left_out: list[int]) -> tuple[list[dict], list[tuple[bytes, str]]]:
    """Run shard ``k``'s published records (the rows of the view ``condition`` but the refs ``left_out``)
    and their stored images (each image read once)."""
    rows = view_rows(store, k, condition, left_out=left_out).drop("ref").to_dicts()
    planned = store.planned_images(k) if rows else {}
    images: dict[str, tuple[bytes, str]] = {}
    for r in rows:
        if r["image_id"] not in images:
            data = read_source(r["source"], planned.get(r["image_id"], {}).get("data"), store.storage_options)
            images[r["image_id"]] = stored_image(data)
    stored = [images[r["image_id"]] for r in rows]
    return [published_row(r, *img) for r, img in zip(rows, stored, strict=True)], stored


def recorded_publish(store: RunStore) -> dict:
    """The ``publish`` section a run was started with; for a filter pass, its run's with the
    pass's own settings over it where they differ from the defaults (a pass names no license
    unless it means another one)."""
    run = RunStore(source_run(store.url), store.storage_options)
    recorded = dict((run.config() or {}).get("publish") or {})
    if run.url != store.url:
        defaults = PublishConfig().model_dump(mode="json")
        own = (store.read_json("manifest.json") or {}).get("publish") or {}
        recorded |= {k: v for k, v in own.items() if v != defaults.get(k)}
    return recorded


def publish_config(store: RunStore, overrides: list[str]) -> PublishConfig:
    """The run's (or pass's) recorded ``publish`` section with ``overrides`` (``license=cc-by-4.0``;
    a ``publish.`` prefix is accepted), validated; a missing license is an error.

    Raises:
        ConfigError: an invalid field, or no license.
    """
    recorded = recorded_publish(store)
    cfg = build_config(recorded, [o.removeprefix("publish.") for o in overrides], source="publish settings", kind=PublishConfig)
    if cfg.license is None:
        raise ConfigError(
            "publish: license is not set; say under which license the data may be used (publish.license in the run's config, "
            "or license=ID on the command line, e.g. license=cc-by-4.0; see https://huggingface.co/docs/hub/repositories-licenses)"
        )
    return cfg


def _options(cfg: PublishConfig, view: tuple[str, str]) -> dict:
    """What a part's content depends on besides its run shards (a change rewrites the part)."""
    cap = {"cluster_cap": {"cap": cfg.cluster_cap, "score": cfg.cluster_score}} if cfg.cluster_cap else {}
    return {
        "version": FORMAT_VERSION, "view": {"name": view[0], "condition": view[1]}, "layouts": sorted(cfg.layouts),
        "webdataset_txt": cfg.webdataset_txt,
    } | cap


def _files_intact(out: RunStore, files: dict[str, dict]) -> bool:
    """Whether each file a done part's marker names is there with its size (a cheap check; ``verify`` reads the checksums)."""
    try:
        return all(out.fs.size(out.path(rel)) == f["bytes"] for rel, f in files.items())
    except FileNotFoundError:
        return False


def _publish_parts(store: RunStore, out: RunStore, cfg: PublishConfig, options: dict, left_out: dict[int, list[int]]) -> Iterator[tuple[dict, bool]]:
    """Each part's marker, in order, and whether it was written now (``False``: done before);
    ``left_out``: per run shard, the refs of rows the cluster cap leaves out (:func:`capped_refs`)."""
    shard_digest = {m["shard"]: m.get("sha256") for m in store.markers()}
    parts: dict[int, list[int]] = {}
    for k in sorted(shard_digest):
        parts.setdefault(k // cfg.shards_per_file, []).append(k)
    started, written = time.monotonic(), 0
    for i, (p, shards) in enumerate(parts.items()):
        rel = f"{MARKERS}/part-{p:05d}.json"
        want = {"part": p, "shards": {str(k): shard_digest[k] for k in shards}, "options": options}
        if "cluster_cap" in options:  # which rows the cap leaves out depends on every shard: recorded per part
            mine = [r for k in shards for r in left_out.get(k, [])]
            want["left_out"] = {"rows": len(mine), "sha256": hashlib.sha256(np.asarray(mine, dtype=np.int64).tobytes()).hexdigest()}
        before = out.read_json(rel)
        if before and {k: before.get(k) for k in want} == want and _files_intact(out, before["files"]):
            log.info(f"[publish] part {i + 1}/{len(parts)}: {before['rows']} rows, published before")
            yield before, False
            continue
        part = PartWriter(out, p, cfg)
        read = lambda k: _shard_records(store, k, options["view"]["condition"], left_out.get(k, []))  # noqa: E731
        tasks: Counter = Counter()
        models: dict[str, set] = {"generators": set(), "judges": set()}
        for records, images in overlapped(read, shards, store.requests_in_flight):
            part.add(records, images)
            tasks.update(r["task"] or "unknown" for r in records)
            models["generators"].update((r["generator"], r["generator_hash"]) for r in records)
            models["judges"].update((r["judge_model"], r["judge_hash"]) for r in records if r["judge_model"])
        marker = want | {"files": part.close(), "rows": sum(tasks.values()), "by_task": dict(tasks)}
        marker |= {k: sorted(v, key=str) for k, v in models.items()}
        for stale in set((before or {}).get("files", {})) - set(marker["files"]):
            out.fs.rm(out.path(stale))
        out.write_json(rel, marker)
        written += marker["rows"]
        rate = written / max(time.monotonic() - started, 1e-9)
        log.info(f"[publish] part {i + 1}/{len(parts)}: {marker['rows']} rows written ({written} this time, {rate:,.0f} rows/s)")
        yield marker, True


def _remove_unclaimed(out: RunStore, markers: list[dict]) -> list[str]:
    """Remove our files that no marker names, and markers of parts that no longer exist; return their names."""
    claimed = {rel for m in markers for rel in m["files"]} | {f"{MARKERS}/part-{m['part']:05d}.json" for m in markers}
    gone = [n for n in out.relative_names() if n not in claimed and (OWN_FILE.fullmatch(n) or re.fullmatch(rf"{MARKERS}/part-\d{{5}}\.json", n))]
    for n in gone:
        out.fs.rm(out.path(n))
    return gone


def publish_run(run: str, out: str, *, overrides: list[str] | None = None, storage_options: dict | None = None, view: str = "kept",
                command: str = "") -> dict:
    """Publish the run (or filter pass) at ``run`` into ``out`` (see the module doc); return what was written.

    Args:
        run: a run's folder, or a filter pass's (``{run}/filtered/{name}``); its committed shards are read.
        out: the folder to write (any fsspec URL); publishing again into it resumes.
        overrides: ``key=value`` settings of :class:`~genixer_ray.config.PublishConfig` over the run's ``publish`` section.
        storage_options: fsspec options for the run, its images and ``out`` (never written anywhere).
        view: the rows to publish: a view's name (``kept``: the filters' decision, ``parsed``: every
            parsed row, or one of the run's config) or ``NAME=CONDITION`` (:mod:`genixer_ray.views`).
        command: the command line, for the card (credentials masked).

    Raises:
        NotARunError: no committed shard at ``run``.
        ConfigError: an invalid publish setting, no license, or an unknown or invalid view.
    """
    from genixer_ray.card import write_card

    so = storage_options or {}
    store = RunStore(run, so)
    cfg = publish_config(store, overrides or [])
    if not store.committed():
        raise NotARunError(f"no committed shards under {run}")
    target = RunStore(out, so)
    target.check_writable()
    options = _options(cfg, resolve_view(store, view))
    left_out = capped_refs(store, options["view"]["condition"], cfg.cluster_cap, cfg.cluster_score)
    left_out_rows = sum(map(len, left_out.values()))
    markers, written = [], 0
    for marker, now in _publish_parts(store, target, cfg, options, left_out):
        markers.append(marker)
        written += now
    files = {rel: f for m in markers for rel, f in m["files"].items()}
    removed = _remove_unclaimed(target, markers)
    by_task = sum((Counter(m["by_task"]) for m in markers), Counter())
    if not by_task and "datasets" in cfg.layouts:
        files |= empty_file(target)
    models = {k: sorted({tuple(x) for m in markers for x in m[k]}, key=str) for k in ("generators", "judges")}
    card = write_card(store, target, cfg, by_task=dict(by_task), models=models, options=options, command=command, parts=len(markers),
                      left_out=left_out_rows)
    summary = {
        "source": redact(store.url), "options": options, "rows": sum(by_task.values()), "by_task": dict(by_task), "left_out": left_out_rows,
        "parts": len(markers), "files": files, "card_sha256": card,
    }
    target.write_json(f"{MARKERS}/publish.json", summary)  # what was published, the same however many tries it took
    return summary | {"output": target.url, "parts_written": written, "removed": removed}


def example_rows(out: str, n: int, storage_options: dict | None = None) -> list[dict]:
    """The first ``n`` published rows of ``out`` (question, answer, task, scores, image name and size)."""
    import pyarrow.parquet as pq
    from PIL import Image

    target = RunStore(out, storage_options)
    shown = []
    for rel in sorted((target.read_json(f"{MARKERS}/publish.json") or {}).get("files", {})):
        if not rel.endswith(".parquet") or len(shown) >= n:
            continue
        with target.fs.open(target.path(rel), "rb") as f:
            # ParquetFile, not read_table: read_table of a Python file object after Polars was
            # imported aborts the interpreter at exit (seen with pyarrow 26 and Polars 2.1)
            first = next(pq.ParquetFile(f).iter_batches(batch_size=n - len(shown)), None)  # not the whole file
            for rec in first.to_pylist() if first is not None else []:
                size = Image.open(io.BytesIO(rec["image"]["bytes"])).size
                shown.append({k: rec[k] for k in ("id", "task", "question", "answer", "clip_score", "consistency_score", "judge_p_yes")}
                             | {"image": f"{rec['image']['path']} ({size[0]}x{size[1]})", "file": rel})
    return shown
