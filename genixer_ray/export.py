"""Export a run's rows as LLaVA conversation JSON, the format LLaVA-style trainers read.

One record per row of a view (:mod:`genixer_ray.views`; ``kept`` by default, ``parsed`` for every parsed row)::

    {"id": "<image id>[#<sample>]", "image": "<path>", "task": "rec",
     "conversations": [{"from": "human", "value": "<image>\\nWhere is the dog?"},
                       {"from": "gpt", "value": "[0.120,0.300,0.450,0.800]"}],
     "genixer": {"run_id": ..., "generator_hash": ..., "seed": ..., "clip_score": ..., ...}}

Boxes stay in the text, normalized to [0, 1] (Shikra's convention, which the generator was
trained on). Every record's image opens as LLaVA's loader opens it,
``os.path.join(image_folder, record["image"])`` (see :func:`export_llava`). Dialogues become several turns. The ``genixer`` key keeps each record's provenance
and filter scores; trainers ignore keys they do not know. Shards are read one at a time and the
JSON array (or JSON Lines) is written as a stream, so memory stays bounded by one shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections import Counter
from collections.abc import Iterator

from genixer_ray.errors import NotARunError
from genixer_ray.overlap import overlapped
from genixer_ray.question_clusters import capped_refs, view_rows
from genixer_ray.schema import row_key
from genixer_ray.seeding import sample_id
from genixer_ray.store import RunStore
from genixer_ray.views import resolve_view

PROVENANCE = ("run_id", "generator_hash", "seed", "clip_score", "consistency_score", "judge_p_yes")


def llava_record(row: dict, image: str) -> dict:
    """The LLaVA conversation record of one parsed row."""
    turns = row.get("turns") or [{"question": row["question"], "answer": row["answer"]}]
    conversations = []
    for i, t in enumerate(turns):
        question = f"<image>\n{t['question']}" if i == 0 else t["question"]
        conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": t["answer"]}]
    return {
        "id": sample_id(*row_key(row)),
        "image": image,
        "task": row.get("parsed_task"),
        "conversations": conversations,
        "genixer": {k: finite(row.get(k)) for k in PROVENANCE},
    }


def finite(v):
    """``v``, or ``None`` for a NaN or infinite float (strict JSON has neither)."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def relative_under(source: str, image_root: str | None) -> str | None:
    """``source`` relative to ``image_root`` when it is a local file under it, else ``None``."""
    if not image_root or "://" in source or source.startswith("inline:"):
        return None
    root = os.path.abspath(image_root).rstrip("/") + "/"
    path = os.path.abspath(source)
    return path[len(root) :] if path.startswith(root) else None


def read_source(source: str, data: bytes | None, storage_options: dict) -> bytes:
    """A row's image bytes: ``data`` when the plan holds them inline, else the file at ``source``."""
    import fsspec

    if data is not None:
        return data
    with fsspec.open(source, "rb", **storage_options) as f:
        return f.read()


class ImageCopier:
    """Writes each exported image once into ``folder``, under a stable name.

    The name is a digest of the image's bytes with the extension of its format, so the same
    image exported twice (or by two runs) lands in one file, and a record's path never changes.
    Records name it ``{prefix}/{name}``: relative to the folder the trainer joins paths to.
    """

    def __init__(self, folder: str, prefix: str, storage_options: dict):
        import fsspec

        self.prefix = prefix
        self.fs, self.root = fsspec.core.url_to_fs(folder, **storage_options)
        self.storage_options = storage_options
        self.written: set[str] = set()

    def copy(self, source: str, data: bytes | None) -> str:
        """The record's image path (relative to the JSON's folder) after writing the image."""
        from PIL import Image

        data = read_source(source, data, self.storage_options)
        fmt = (Image.open(io.BytesIO(data)).format or "bin").lower()
        name = f"{hashlib.sha256(data).hexdigest()[:24]}.{'jpg' if fmt == 'jpeg' else fmt}"
        if name not in self.written:
            self.fs.makedirs(self.root, exist_ok=True)
            self.fs.pipe_file(f"{self.root}/{name}", data)
            self.written.add(name)
        return f"{self.prefix}/{name}"


def committed_run(run: str, storage_options: dict) -> tuple[RunStore, int]:
    """The run's store and how many shards it has committed.

    Raises:
        NotARunError: it has none.
    """
    store = RunStore(run, storage_options)
    n = len(store.committed())
    if not n:
        raise NotARunError(f"no committed shards under {run}")
    return store, n


def selection(store: RunStore, view: str, cluster_cap: int | None, cluster_score: str) -> tuple[str, dict[int, list[int]]]:
    """The condition of ``view`` (:func:`~genixer_ray.views.resolve_view`) and, with a
    ``cluster_cap`` N, per run shard the refs of the view's rows beyond the N best (by
    ``cluster_score``) of their near-duplicate question cluster
    (:func:`~genixer_ray.question_clusters.capped_refs`), as ``publish.cluster_cap`` leaves out."""
    condition = resolve_view(store, view)[1]
    return condition, capped_refs(store, condition, cluster_cap, cluster_score)


def exported_rows(
    store: RunStore, *, condition: str, image_root: str | None, copy_images: bool, copier: ImageCopier, missing: dict[str, str],
    left_out: dict[int, list[int]],
) -> Iterator[tuple[dict, str]]:
    """``(row, image path)`` of each row to export, committed shard by committed shard, but the
    refs ``left_out`` of each shard (:func:`selection`).

    The image path is relative to ``image_root`` for a local file under it (unless
    ``copy_images``); otherwise the image is copied by ``copier``. A row whose image cannot be
    read is left out and recorded in ``missing`` (image id -> reason). The shards and their plans
    are read a few at a time on an object store (:func:`~genixer_ray.overlap.overlapped`).
    """

    def read(k: int) -> tuple[list[dict], dict[str, dict]]:
        rows = view_rows(store, k, condition, left_out=left_out.get(k)).drop("ref").to_dicts()
        return rows, store.planned_images(k) if rows else {}

    for rows, planned in overlapped(read, sorted(store.committed()), store.requests_in_flight):
        for row in rows:
            rel = None if copy_images else relative_under(row["source"], image_root)
            try:
                yield row, rel or copier.copy(row["source"], planned.get(row["image_id"], {}).get("data"))
            except (OSError, ValueError) as e:  # the image is gone or unreadable: say so, go on
                missing[row["image_id"]] = f"{type(e).__name__}: {e}"


def export_llava(
    run: str, out: str, *, storage_options: dict | None = None, image_root: str | None = None, view: str = "kept",
    copy_images: bool = False, cluster_cap: int | None = None, cluster_score: str = "judge_p_yes",
) -> dict:
    """Write the run's rows as LLaVA conversation JSON (``.json``) or JSON Lines (``.jsonl``); return counts.

    A record's ``image`` is what LLaVA's loader joins to its ``image_folder``: the path relative to
    ``image_root`` for a local file under it; otherwise (an ``s3://`` or other remote source, bytes
    inline in the manifest, a local file elsewhere, or ``copy_images``) the image is written once
    into ``{out stem}_images/`` beside the file and the record names it relative to the file's
    folder, so ``image_folder`` is that folder. Scores that are missing are ``null``, never NaN. A
    row whose image cannot be read any more is left out and counted (``skipped_missing_image``).

    Args:
        run: a run folder (``{output.path}/{name}``) or a filter pass's (``.../filtered/{name}``);
            only committed shards are read, one at a time.
        out: the file to write (any fsspec URL); ``.jsonl`` writes one record per line.
        storage_options: fsspec options for ``run``, its images and ``out``.
        image_root: a local folder the trainer's ``image_folder`` will be (relative paths allowed).
        view: the rows to export: a view's name (``kept``: the filters' decision; ``parsed``: every
            parsed row; or one of the run's config) or ``NAME=CONDITION`` (:func:`~genixer_ray.views.resolve_view`).
        copy_images: copy every image, also local ones under ``image_root``.
        cluster_cap: at most this many rows of the view per near-duplicate question cluster of a
            task, the highest ``cluster_score`` first (as ``publish.cluster_cap``; :func:`selection`).
    """
    import fsspec

    so = storage_options or {}
    store, n_shards = committed_run(run, so)
    jsonl = out.endswith(".jsonl")
    head, _, name = out.rpartition("/")
    stem = name.rsplit(".", 1)[0]
    copier = ImageCopier(f"{head}/{stem}_images" if head else f"{stem}_images", f"{stem}_images", so)
    n = 0
    by_task: Counter = Counter()
    missing: dict[str, str] = {}
    condition, left_out = selection(store, view, cluster_cap, cluster_score)
    with fsspec.open(out, "w", **so) as f:
        f.write("" if jsonl else "[")
        for row, image in exported_rows(
            store, condition=condition, image_root=image_root, copy_images=copy_images, copier=copier, missing=missing, left_out=left_out,
        ):
            text = json.dumps(llava_record(row, image), allow_nan=False)
            f.write(f"{text}\n" if jsonl else (",\n" if n else "\n") + text)
            n += 1
            by_task[row.get("parsed_task") or "unknown"] += 1
        f.write("" if jsonl else "\n]\n")
    return {
        "records": n, "shards": n_shards, "by_task": dict(by_task), "output": out, "images_copied": len(copier.written),
        "skipped_missing_image": len(missing), "missing_examples": dict(list(missing.items())[:3]),
        "left_out_by_cluster_cap": sum(map(len, left_out.values())),
    }
