"""The files a part of a published dataset is written to (:mod:`genixer_ray.publish`): a Parquet
file per task in the ``datasets`` layout and a WebDataset tar, each hashed as it is written."""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass, field

from genixer_ray.config import PublishConfig
from genixer_ray.published_rows import json_record, published_schema
from genixer_ray.store import RunStore

ROW_GROUP = 100  # rows per Parquet row group: what datasets writes for image data (the viewer reads row groups)


class HashingFile:
    """A write-only file that hashes and counts what passes through to ``f`` (one pass: no read-back)."""

    def __init__(self, f):
        self.f, self.sha, self.size, self.closed = f, hashlib.sha256(), 0, False

    def write(self, data) -> int:
        data = bytes(data)
        self.sha.update(data)
        self.size += len(data)
        self.f.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.f.flush()

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.f.close()


@dataclass
class PartWriter:
    """The files of one part of a published dataset being written: one Parquet writer per task, one tar."""

    out: RunStore
    number: int
    cfg: PublishConfig
    files: dict[str, dict] = field(default_factory=dict)
    _open: dict[str, tuple] = field(default_factory=dict)  # name -> (hashing file, writer)

    def _file(self, rel: str, make):
        if rel not in self._open:
            self.out.fs.makedirs(self.out.path(rel.rsplit("/", 1)[0]), exist_ok=True)
            sink = HashingFile(self.out.fs.open(self.out.path(rel), "wb"))
            self._open[rel] = (sink, make(sink))
            self.files[rel] = {"rows": 0}
        return self._open[rel][1]

    def add(self, records: list[dict], images: list[tuple[bytes, str]]) -> None:
        """Write one run shard's published records (``images``: their stored bytes and extension)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        name = f"train-{self.number:05d}"
        if "datasets" in self.cfg.layouts:
            by_task: dict[str, list[dict]] = {}
            for rec in records:
                by_task.setdefault(rec["task"] or "unknown", []).append(rec)
            schema = published_schema()
            for task, recs in sorted(by_task.items()):
                rel = f"data/{task}/{name}.parquet"
                writer = self._file(rel, lambda sink: pq.ParquetWriter(sink, schema))
                writer.write_table(pa.Table.from_pylist(recs, schema=schema), row_group_size=ROW_GROUP)
                self.files[rel]["rows"] += len(recs)
        if "webdataset" in self.cfg.layouts and records:
            rel = f"webdataset/{name}.tar"
            tar = self._file(rel, lambda sink: tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT))
            for rec, (data, ext) in zip(records, images, strict=True):
                key = rec["image"]["path"].rsplit(".", 1)[0]
                mtime = rec["created_at"].timestamp() if rec.get("created_at") else 0
                members = [(ext, data), ("json", json_record(rec))]
                if self.cfg.webdataset_txt:
                    members.append(("txt", f"{rec['question']}\n{rec['answer']}".encode()))
                for suffix, payload in members:
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size, info.mtime, info.mode = len(payload), int(mtime), 0o644
                    tar.addfile(info, io.BytesIO(payload))
            self.files[rel]["rows"] += len(records)

    def close(self) -> dict[str, dict]:
        """Finish every file; their rows, sizes and sha256."""
        for rel, (sink, writer) in self._open.items():
            writer.close()
            sink.close()
            self.files[rel] |= {"bytes": sink.size, "sha256": sink.sha.hexdigest()}
        return self.files


def empty_file(out: RunStore) -> dict[str, dict]:
    """A dataset with no rows still loads: one empty Parquet file holds its columns and types."""
    import pyarrow.parquet as pq

    rel = "data/default/train-00000.parquet"
    out.fs.makedirs(out.path("data/default"), exist_ok=True)
    with out.fs.open(out.path(rel), "wb") as f:
        sink = HashingFile(f)
        pq.ParquetWriter(sink, published_schema()).close()  # no row group at all: datasets reads an empty one as batch size 0
    return {rel: {"rows": 0, "bytes": sink.size, "sha256": sink.sha.hexdigest()}}
