"""A run's files on any fsspec store: the input plan, output shards, commit markers, manifest.

Layout under ``{output.path}/{run name}/``::

    plan/part-000000.parquet ...   the input rows of each shard, fixed at the run's first start
    plan/_COMPLETE.json            the plan's row and shard counts (the plan is used only with it)
    data/shard-000000.parquet ...  output rows of one shard, written in one piece
    commits/shard-000000.json      commit marker: written after the shard was read back whole
    manifest.json                  config, package and fingerprint versions, counts by status and error code

A shard counts only once its marker exists; resume = the plan's shards minus the marked ones.
Names depend only on the run and the shard number, so a re-run overwrites a half-written shard
instead of writing a second copy beside it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec
import polars as pl

from genixer_ray.errors import InputError, StorageError, StoreUnusableError
from genixer_ray.overlap import overlapped
from genixer_ray.schema import PLAN_SCHEMA


def is_local_fs(fs) -> bool:
    """Whether an fsspec file system is the local disk."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def source_run(url: str) -> str:
    """The generation run a folder belongs to: a filter pass lives at ``{run}/filtered/{name}``."""
    return url.rsplit("/filtered/", 1)[0] if "/filtered/" in url else url


def _shard_number(path: str, suffix: str) -> int | None:
    """The shard number in a shard file's or marker's path (``.../shard-000042{suffix}``), else ``None``."""
    base = path.rsplit("/", 1)[-1]
    number = base[len("shard-") : -len(suffix)]
    return int(number) if base.startswith("shard-") and base.endswith(suffix) and number.isdigit() else None


def plan_samples(plan: dict) -> int:
    """Samples per image a plan was made for (plans written before samples existed: 1)."""
    return plan.get("samples_per_image", 1)


class RunStore:
    """Reads and writes one run's files under ``url`` through fsspec."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self.root = self.root.rstrip("/")
        self.is_local = is_local_fs(self.fs)
        # Per-shard requests run this many at once (plan files, the writer's commits, verify's,
        # export's and report's reads): an object store's round trips overlap; a local disk gains
        # nothing (BENCHMARKS.md, "Object stores").
        self.requests_in_flight = 1 if self.is_local else 8

    def arrow_filesystem(self):
        """A pyarrow file system over this store for Ray Data readers (``None``: the local disk)."""
        if self.is_local:
            return None
        import pyarrow.fs as pafs

        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

    # -- paths ----------------------------------------------------------------------------------
    def path(self, rel: str) -> str:
        """The store path of ``rel`` inside the run folder."""
        return f"{self.root}/{rel}"

    def uri(self, rel: str) -> str:
        """A full URL (protocol included) of ``rel``, for readers outside fsspec."""
        return self.fs.unstrip_protocol(self.path(rel))

    @staticmethod
    def plan_name(shard: int) -> str:
        """Relative path of a shard's plan file."""
        return f"plan/part-{shard:06d}.parquet"

    @staticmethod
    def shard_name(shard: int) -> str:
        """Relative path of a shard's output file."""
        return f"data/shard-{shard:06d}.parquet"

    @staticmethod
    def marker_name(shard: int) -> str:
        """Relative path of a shard's commit marker."""
        return f"commits/shard-{shard:06d}.json"

    # -- primitives -----------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Fail fast, before any work, when the store cannot be written."""
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            self.write_bytes("_write_check", b"ok")
            self.fs.rm(self.path("_write_check"))
        except Exception as e:
            raise StoreUnusableError(f"output store {self.url} is not writable: {type(e).__name__}: {e}") from e

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a whole object: one PUT on object stores; temp file + rename on file systems."""
        path = self.path(rel)
        if self.is_local:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{path}.tmp"
            with self.fs.open(tmp, "wb") as f:
                f.write(data)
            self.fs.mv(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    def relative_names(self) -> list[str]:
        """Every object under the store's folder, by its path relative to it, sorted."""
        root = self.root.rstrip("/") + "/"
        return sorted(n[len(root) :] for n in self.fs.find(self.root) if n.startswith(root))

    def read_bytes(self, rel: str) -> bytes:
        """The whole object at ``rel``."""
        return self.fs.cat_file(self.path(rel))

    def read_json(self, rel: str) -> dict | None:
        """The JSON object at ``rel``, or ``None`` when it does not exist."""
        try:
            return json.loads(self.fs.cat_file(self.path(rel)))
        except FileNotFoundError:
            return None

    def write_json(self, rel: str, obj: dict) -> None:
        """Write ``obj`` as indented JSON, whole."""
        self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_frame(self, rel: str, columns: list[str] | None = None) -> pl.DataFrame:
        """The Parquet object at ``rel`` as a frame (only ``columns``, when given)."""
        with self.fs.open(self.path(rel), "rb") as f:
            return pl.read_parquet(f, columns=columns)

    def write_frame(self, rel: str, df: pl.DataFrame) -> str:
        """Write ``df`` as one Parquet object (zstd), read its footer back to check it; return its sha256."""
        import hashlib
        import io

        import pyarrow.parquet as pq

        buf = io.BytesIO()
        df.write_parquet(buf, compression="zstd")
        self.write_bytes(rel, buf.getvalue())
        with self.fs.open(self.path(rel), "rb") as f:
            n = pq.ParquetFile(f).metadata.num_rows
        if n != df.height:
            raise StorageError(f"{rel}: wrote {df.height} rows but read back {n}")
        return hashlib.sha256(buf.getvalue()).hexdigest()

    def write_config(self, config: dict) -> None:
        """``run.json``: the (redacted) config a run was last started with, written before its work."""
        self.write_json("run.json", config)

    def config(self) -> dict | None:
        """The config a run was last started with (``run.json``, else its manifest's), or ``None``."""
        return self.read_json("run.json") or (self.read_json("manifest.json") or {}).get("config")

    # -- plan -----------------------------------------------------------------------------------
    def plan(self) -> dict | None:
        """The complete plan's summary (``shards``, ``rows``, ``rows_per_shard``), or ``None``."""
        return self.read_json("plan/_COMPLETE.json")

    def write_plan(self, rows: Iterable[dict], shard_size: int, *, meta: dict | None = None, in_flight: int | None = None) -> dict:
        """Cut the input rows into shards of ``shard_size`` and write each as a plan file.

        Streams: the rows of one shard are gathered at a time, and at most ``in_flight`` shards
        are being written at once (default 8 on an object store, where the round trips of each
        write and its check then overlap, BENCHMARKS.md, "Object stores"; 1 on a local disk, which
        gains nothing from it). ``meta`` (what the plan was made from) is stored in the completion
        marker, which is written last, once every plan file is.
        """
        sizes: list[int] = []
        hashes = []  # each shard's ids hashed to 64 bits, for the duplicate check

        def named_frame(batch: list[dict]) -> tuple[str, pl.DataFrame]:
            k = len(sizes)
            frame = pl.DataFrame([{**r, "shard": k} for r in batch], schema=PLAN_SCHEMA)
            hashes.append(frame["image_id"].hash(seed=0).to_numpy())
            sizes.append(len(batch))
            return self.plan_name(k), frame

        def shard_frames() -> Iterator[tuple[str, pl.DataFrame]]:
            batch: list[dict] = []
            for row in rows:
                batch.append(row)
                if len(batch) == shard_size:
                    yield named_frame(batch)
                    batch = []
            if batch:
                yield named_frame(batch)

        # Drained: every plan file written (or a write's error raised) before the duplicate check and the marker.
        deque(overlapped(lambda named: self.write_frame(*named), shard_frames(), in_flight or self.requests_in_flight), maxlen=0)
        summary = {"shards": len(sizes), "rows": sum(sizes), "rows_per_shard": sizes, **(meta or {})}
        self.check_unique_ids(hashes)
        self.write_json("plan/_COMPLETE.json", summary)
        return summary

    def check_unique_ids(self, shard_hashes: list, *, show: int = 5) -> None:
        """Raise :class:`~genixer_ray.errors.InputError` naming duplicate image ids across the plan.

        ``shard_hashes`` holds each plan file's ids hashed to 64 bits (``Series.hash(seed=0)``),
        taken as the file was written: memory stays at 8 bytes an image, and the plan files are
        read back (every one a request on an object store) only when a hash repeats, to compare
        those ids whole, so a hash collision is never taken for a duplicate. (Grouping the ids
        themselves with Polars, as before, took the driver from 163 to 375 MiB at 1,000,000 ids.)
        """
        import numpy as np

        hashes = np.concatenate(shard_hashes or [np.empty(0, np.uint64)])
        hashes.sort()
        repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
        if not repeated.size:
            return
        # Only the plan files holding a repeated hash are read again; their kept hashes pick the ids.
        ids = pl.concat([self._ids(k).filter(hit) for k, h in enumerate(shard_hashes) if (hit := np.isin(h, repeated)).any()])
        dup = ids.value_counts().filter(pl.col("count") > 1).sort("image_id").head(show)
        if dup.height:
            listed = ", ".join(f"{r['image_id']!r} x{r['count']}" for r in dup.iter_rows(named=True))
            raise InputError(f"input: duplicate image ids ({listed}); every image id must be unique")

    def _ids(self, shard: int) -> pl.Series:
        return self.read_frame(self.plan_name(shard), columns=["image_id"])["image_id"]

    # -- shards ---------------------------------------------------------------------------------
    def committed(self) -> set[int]:
        """Shard numbers whose commit marker exists."""
        return self.shard_numbers("commits", ".json")

    def shard_numbers(self, folder: str, suffix: str) -> set[int]:
        """The shard numbers of the ``shard-NNNNNN{suffix}`` objects in ``folder`` (none if it is absent)."""
        try:
            names = self.fs.ls(self.path(folder), detail=False)
        except FileNotFoundError:
            return set()
        return {k for k in (_shard_number(n, suffix) for n in names) if k is not None}

    def commit_shard(self, shard: int, df: pl.DataFrame, counts: dict) -> None:
        """Write a shard's rows, check them, then its marker: the shard exists from that moment."""
        digest = self.write_frame(self.shard_name(shard), df)
        self.write_json(self.marker_name(shard), {"shard": shard, "rows": df.height, "sha256": digest, **counts})

    def markers(self, *, per_request: int = 1000) -> Iterator[dict]:
        """The commit markers' contents, in shard order.

        Fetched ``per_request`` at a time with one ``cat`` over their paths, which an asynchronous
        file system (s3fs, gcsfs) serves concurrently: a run's end, ``inspect`` and a filter pass
        read every marker (3,907 at 1,000,000 images), BENCHMARKS.md, "Object stores".
        """
        paths = [self.path(self.marker_name(k)) for k in sorted(self.committed())]
        for i in range(0, len(paths), per_request):
            got = self.fs.cat(paths[i : i + per_request], on_error="omit")  # a marker gone since the listing: skipped
            for _, data in sorted((_shard_number(p, ".json"), data) for p, data in got.items()):
                yield json.loads(data)

    def planned_images(self, shard: int) -> dict[str, dict]:
        """``{image_id: {"source", "data"}}`` of a shard's plan (``data``: inline bytes, else None).

        A filter pass (``{run}/filtered/{name}``) reads its run's plan; an unknown shard gives ``{}``.
        """
        plan = RunStore(source_run(self.url), self.storage_options)
        try:
            frame = plan.read_frame(plan.plan_name(shard))
        except FileNotFoundError:
            return {}
        return {r["image_id"]: {"source": r.get("source"), "data": r.get("data")} for r in frame.to_dicts()}

    def dataset(self):
        """The committed shards (only those with a commit marker) as one ``pyarrow.dataset``."""
        import pyarrow.dataset as pads

        files = [self.path(self.shard_name(k)) for k in sorted(self.committed())]
        return pads.dataset(files, format="parquet", filesystem=self.arrow_filesystem())

    def read_rows(self, columns: list[str] | None = None) -> pl.DataFrame:
        """All committed rows (only shards with markers) as one frame, only ``columns`` when given.

        Read a shard at a time: a pyarrow dataset over all of them (Polars' ``scan_pyarrow_dataset``)
        keeps about 190 KiB per file once read, 1.5 GiB over the 7,813 shards of a 2,000,000-row run
        for one column (BENCHMARKS.md, "Scale").
        """
        frames = [self.read_frame(self.shard_name(k), columns) for k in sorted(self.committed())]
        return pl.concat(frames) if frames else pl.DataFrame()
