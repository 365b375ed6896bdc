"""Input listing through fsspec: the embedded photos, a folder, or a manifest (JSONL, CSV, Parquet).

Listing is streaming: rows are yielded as folders are walked and manifests are read batch by
batch, so no input is ever held whole. Each row is ``{"image_id", "source", "data"}`` plus, for
an entry that cannot be used at all (a path escaping the root), ``error_code``/``error_message``.

* folder (local path or URL such as ``s3://bucket/images``): every file with an image extension,
  recursively, in sorted order; the id is the path relative to the folder (with its extension,
  so ids are unique by construction).
* manifest: a ``.jsonl``, ``.csv`` or ``.parquet`` file with an ``image_id`` column and either a
  ``path`` / ``uri`` column (relative paths resolve under ``input.root``, by default the manifest's
  folder, and may not escape it) or an ``image`` / ``bytes`` column holding the encoded image.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterator
from typing import Any

import fsspec

from genixer_ray.config import InputConfig, redact
from genixer_ray.errors import InputError
from genixer_ray.images import IMAGE_EXTENSIONS, embedded_image_paths
from genixer_ray.paths import escapes_root, printable_name, resolve_under_root
from genixer_ray.store import is_local_fs

MANIFEST_SUFFIXES = (".jsonl", ".csv", ".parquet")
_PATH_COLUMNS = ("path", "uri")
_BYTES_COLUMNS = ("image", "bytes")


def input_kind(source: str) -> str:
    """``embedded``, ``manifest`` or ``folder``, from the configured source."""
    if source == "embedded":
        return "embedded"
    return "manifest" if source.lower().endswith(MANIFEST_SUFFIXES) else "folder"


def iter_inputs(cfg: InputConfig) -> Iterator[dict[str, Any]]:
    """Yield the input rows of ``cfg.source`` in a deterministic order (see the module doc)."""
    kind = input_kind(cfg.source)
    if kind == "embedded":
        rows: Iterator[dict[str, Any]] = (
            {"image_id": k, "source": str(p), "data": None} for k, p in embedded_image_paths().items()
        )
    elif kind == "folder":
        rows = _iter_folder(cfg)
    else:
        rows = _iter_manifest(cfg)
    try:
        for i, row in enumerate(rows):
            if cfg.limit is not None and i >= cfg.limit:
                return
            yield row
    except OSError as e:  # no permission, wrong credentials, unreachable store
        raise InputError(f"input.source {redact(cfg.source)} cannot be read: {type(e).__name__}: {e}") from e


def _url(fs, path: str) -> str:
    """A path other processes can open: plain for local files, with its protocol otherwise."""
    return path if is_local_fs(fs) else fs.unstrip_protocol(path)


def _iter_folder(cfg: InputConfig) -> Iterator[dict[str, Any]]:
    fs, root = fsspec.core.url_to_fs(cfg.source, **cfg.storage_options)
    if not fs.isdir(root):
        raise InputError(f"input.source: folder not found: {cfg.source}")
    root = root.rstrip("/")
    local = is_local_fs(fs)
    # fsspec's local walk does not descend into links to directories (no loops, nothing outside
    # is listed through them); links to files are listed and checked in _folder_row.
    for dirpath, dirs, files in fs.walk(root, detail=False):
        dirs.sort()  # walk descends in this order: sorted, so listings repeat
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                yield _folder_row(fs, root, posixpath.join(dirpath, name), local)


def _folder_row(fs, root: str, path: str, local: bool) -> dict[str, Any]:
    """One listed file's row; a name that is not UTF-8 or a link out of the folder is an error row."""
    image_id, source = path[len(root) + 1 :], _url(fs, path)
    row: dict[str, Any] = {"image_id": printable_name(image_id), "source": printable_name(source), "data": None}
    if row["image_id"] != image_id:
        return row | {"error_code": "bad_file_name", "error_message": f"file name is not UTF-8: {row['image_id']!r}"}
    if local and escapes_root(path, root):
        return row | {"error_code": "path_escapes_root", "error_message": f"{image_id!r} links to {os.path.realpath(path)!r}, outside {root!r}"}
    return row


def _iter_manifest(cfg: InputConfig) -> Iterator[dict[str, Any]]:
    fs, path = fsspec.core.url_to_fs(cfg.source, **cfg.storage_options)
    if not fs.isfile(path):
        raise InputError(f"input.source: manifest not found: {cfg.source}")
    root = cfg.root if cfg.root is not None else _url(fs, posixpath.dirname(path))
    for line_no, rec in enumerate(_manifest_records(fs, path), start=1):
        yield _manifest_row(rec, line_no, root, cfg.root is not None)


def _manifest_records(fs, path: str) -> Iterator[dict[str, Any]]:
    suffix = path.lower().rsplit(".", 1)[-1]
    if suffix == "jsonl":
        with fs.open(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as e:
                        raise InputError(f"input.source: line {n} is not JSON: {e}") from None
    elif suffix == "csv":
        import pyarrow.csv as pacsv

        with fs.open(path, "rb") as f:
            reader = pacsv.open_csv(f, convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
            for batch in reader:
                yield from batch.to_pylist()
    else:
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
                yield from batch.to_pylist()


def _manifest_row(rec: dict[str, Any], n: int, root: str, explicit_root: bool = False) -> dict[str, Any]:
    image_id = rec.get("image_id")
    if image_id is None or str(image_id) == "":
        raise InputError(f"input.source: entry {n} has no image_id")
    row: dict[str, Any] = {"image_id": str(image_id), "source": "", "data": None}
    data = next((rec[c] for c in _BYTES_COLUMNS if rec.get(c) is not None), None)
    if isinstance(data, dict):  # Hugging Face datasets store images as {"bytes": ..., "path": ...}
        data = data.get("bytes")
    if data is not None:
        row.update(source=f"inline:{image_id}", data=bytes(data))
        return row
    ref = next((str(rec[c]) for c in _PATH_COLUMNS if rec.get(c)), None)
    if ref is None:
        raise InputError(f"input.source: entry {n} ({image_id}) has none of {_PATH_COLUMNS + _BYTES_COLUMNS}")
    resolved = resolve_under_root(ref, root)
    # Links are followed before deciding: a relative name (or, with input.root set, any local path)
    # whose real file lies outside the root is refused like "../x".
    if resolved is not None and (not ref.startswith("/") or explicit_root) and escapes_root(resolved, root):
        resolved = None
    if resolved is None:
        row.update(source=ref, error_code="path_escapes_root", error_message=f"{ref!r} resolves outside {root!r}")
    else:
        row["source"] = resolved
    return row
