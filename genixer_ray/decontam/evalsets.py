"""Evaluation sets in the forms their users have them, each read into records: an item id, the image's
bytes and the questions asked about it (:class:`EvalRecord`).

- ``vlmevalkit_tsv``: VLMEvalKit's benchmark TSVs, read as its ``ImageBaseDataset`` reads them
  (``vlmeval/dataset/image_base.py``, ``vlmeval/smp``): tab-separated with CSV quoting; ``index``
  names the item; ``image`` holds the base64 of the image, or (64 characters or fewer) the
  ``index`` of the row that holds it, or a Python list literal of several base64 images; a row
  without image bytes may name ``image_path`` under the source's ``image_root``.
- ``parquet``: Parquet files (a file, a folder or a glob) whose image column holds ``{bytes,
  path}`` structs, as Hugging Face ``datasets``' ``Image`` feature and lmms-eval store them, or
  plain image bytes; the item id is the ``id``, ``index`` or ``question_id`` column, else the row.
- ``images``: a folder or a manifest, listed exactly as ``input.source`` lists a run's images.
- an annotation format (:data:`genixer_ray.annotations.FORMATS`): its records converted as for
  training, each distinct image once, named by its first sample's id; ``vqav2`` also with its
  questions file alone (the test and test-dev splits, published without annotations), each
  image named by its first question's ``question_id``.

A record that cannot give an image is skipped and counted by reason in the source's
:class:`~genixer_ray.annotations.SourceStats` (``bad_base64``, ``bad_reference``, ``no_image``,
``missing``, ...); a file that cannot be read at all is an error naming it.
"""

from __future__ import annotations

import ast
import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass, field

import fsspec

from genixer_ray.annotations import SourceStats, convert_source
from genixer_ray.config.decontamination import EvalSource
from genixer_ray.errors import UserError

_ID_COLUMNS = ("id", "index", "question_id")
_QUESTION_COLUMNS = ("question", "query", "prompt")


@dataclass(frozen=True)
class EvalRecord:
    """One evaluation image (``data`` ``None``: the item has questions but no image of its own)
    and the questions asked about it."""

    item: str
    data: bytes | None
    questions: tuple[str, ...] = field(default=())


def _read(url: str, storage_options: dict) -> bytes:
    with fsspec.open(url, "rb", **storage_options) as f:
        return f.read()


def _image_list(value: str) -> list[str]:
    # VLMEvalKit's toliststr: a list literal of several images, else one image.
    if len(value) > 1 and value[0] == "[" and value[-1] == "]":
        return [str(x) for x in ast.literal_eval(value)]
    return [value]


def _vlmevalkit_tsv(src: EvalSource, stats: SourceStats) -> Iterator[EvalRecord]:
    import polars as pl

    try:
        with fsspec.open(src.path, "rb", **src.storage_options) as f:
            table = pl.read_csv(f, separator="\t", infer_schema=False, quote_char='"')
    except (OSError, pl.exceptions.PolarsError) as e:
        raise UserError(f"decontamination: {src.path} cannot be read as a VLMEvalKit TSV: {type(e).__name__}: {e}") from None
    if "index" not in table.columns or not {"image", "image_path"} & set(table.columns):
        raise UserError(f"decontamination: {src.path} has no index and image (or image_path) columns: {table.columns[:8]}")
    rows = table.to_dicts()
    images = {str(r["index"]): r.get("image") or "" for r in rows}
    seen: set[str] = set()
    for r in rows:
        stats.records += 1
        index, value = str(r["index"]), r.get("image") or ""
        questions = tuple(q for q in [r.get("question")] if q)
        if 0 < len(value) <= 64:  # the index of the row holding the image
            if len(images.get(value, "")) <= 64:
                stats.skip("bad_reference", f"index {index}", f"image refers to index {value!r}, which holds no image")
                continue
            value = images[value]
        if not value:
            if r.get("image_path") and src.image_root:
                for k, name in enumerate(_image_list(r["image_path"])):
                    url = f"{src.image_root.rstrip('/')}/{name}"
                    yield from _counted(stats, f"{index}#{k}" if k else index, lambda u=url: _read(u, src.storage_options), questions)
                continue
            stats.skip("no_image", f"index {index}", "no image bytes and no image_path under image_root")
            continue
        if value in seen:  # several questions about one image: its image once, every question
            yield EvalRecord(index, None, questions)
            continue
        seen.add(value)
        for k, b64 in enumerate(_image_list(value)):
            try:
                data = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError) as e:
                stats.skip("bad_base64", f"index {index}", str(e))
                continue
            stats.samples += 1
            yield EvalRecord(f"{index}#{k}" if k else index, data, questions)


def _counted(stats: SourceStats, item: str, read, questions: tuple[str, ...] = ()) -> Iterator[EvalRecord]:
    try:
        data = read()
    except FileNotFoundError as e:
        stats.skip("missing", item, str(e))
        return
    stats.samples += 1
    yield EvalRecord(item, data, questions)


def _parquet(src: EvalSource, stats: SourceStats) -> Iterator[EvalRecord]:
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(src.path, **src.storage_options)
    files = sorted(fs.glob(f"{root.rstrip('/')}/**/*.parquet")) if fs.isdir(root) else sorted(fs.glob(root))
    if not files:
        raise UserError(f"decontamination: no Parquet file at {src.path}")
    for name in files:
        with fs.open(name, "rb") as f:
            pf = pq.ParquetFile(f)
            columns = pf.schema_arrow.names
            if src.image_column not in columns:
                raise UserError(f"decontamination: {name} has no column {src.image_column!r} (columns: {columns[:8]})")
            id_col = next((c for c in _ID_COLUMNS if c in columns), None)
            q_col = next((c for c in _QUESTION_COLUMNS if c in columns), None)
            n = 0
            for batch in pf.iter_batches(columns=[src.image_column, *(c for c in (id_col, q_col) if c)]):
                for r in batch.to_pylist():
                    stats.records += 1
                    item = str(r[id_col]) if id_col else f"{name.rsplit('/', 1)[-1]}:{n}"
                    n += 1
                    questions = (str(r[q_col]),) if q_col and r[q_col] else ()
                    yield from _parquet_image(src, stats, item, r[src.image_column], questions)


def _parquet_image(src: EvalSource, stats: SourceStats, item: str, value, questions: tuple[str, ...]) -> Iterator[EvalRecord]:
    # datasets' Image feature: {bytes, path}; bytes may be null with a path to the file instead.
    data, path = (value.get("bytes"), value.get("path")) if isinstance(value, dict) else (value, None)
    if data:
        stats.samples += 1
        yield EvalRecord(item, data, questions)
    elif path:
        url = path if "://" in path or path.startswith("/") or not src.image_root else f"{src.image_root.rstrip('/')}/{path}"
        yield from _counted(stats, item, lambda: _read(url, src.storage_options), questions)
    else:
        stats.skip("no_image", item, "the image column holds neither bytes nor a path")


def _images(src: EvalSource, stats: SourceStats) -> Iterator[EvalRecord]:
    from genixer_ray.config import InputConfig
    from genixer_ray.inputs import iter_inputs

    for row in iter_inputs(InputConfig(source=src.path, storage_options=src.storage_options)):
        stats.records += 1
        if row.get("error_code"):
            stats.skip(row["error_code"], row["image_id"], row.get("error_message") or "")
        elif row.get("data") is not None:
            stats.samples += 1
            yield EvalRecord(row["image_id"], row["data"])
        else:
            yield from _counted(stats, row["image_id"], lambda u=row["source"]: _read(u, src.storage_options))


def _each_image_once(stats: SourceStats, items: Iterator[tuple[str, str, tuple[str, ...]]], storage_options: dict) -> Iterator[EvalRecord]:
    # (item, image URL, questions) -> records: an image read at its first item, questions alone after.
    seen: set[str] = set()
    for item, image, questions in items:
        if image in seen:
            yield EvalRecord(item, None, questions)
            continue
        seen.add(image)
        stats.records += 1
        yield from _counted(stats, item, lambda u=image: _read(u, storage_options), questions)


def _annotations(src: EvalSource, stats: SourceStats) -> Iterator[EvalRecord]:
    from genixer_ray.fixtures import resolve_fixture  # fixtures/...: the bundled files, as training takes them

    files = {role: resolve_fixture(url) for role, url in (({"path": src.path} if src.path else {}) | src.files).items()}
    converted = SourceStats(stats.source)  # the converter's own counts: records and samples of questions, not images
    samples = convert_source(src.format, files, image_root=resolve_fixture(src.image_root), storage_options=src.storage_options,
                             splits=tuple(src.splits), stats=converted)
    yield from _each_image_once(stats, ((x["sample_id"], x["image"], _sample_questions(x)) for x in samples), src.storage_options)
    for reason, n in converted.skipped.items():
        stats.skipped[reason] += n
        stats.examples.setdefault(reason, converted.examples.get(reason, []))


def _vqav2_questions(src: EvalSource, stats: SourceStats) -> Iterator[EvalRecord]:
    # A VQAv2 questions file alone: the test and test-dev splits publish no annotations.
    from genixer_ray.annotations import SourceContext
    from genixer_ray.annotations.base import Skip
    from genixer_ray.annotations.generic import vqav2_image, vqav2_questions
    from genixer_ray.fixtures import resolve_fixture

    ctx = SourceContext({"questions": resolve_fixture(src.files["questions"])}, resolve_fixture(src.image_root), src.storage_options)
    questions, subtype = vqav2_questions(ctx)  # a file not in the format: ConversionError, naming it

    def items():
        for n, q in enumerate(questions):
            item = str(q.get("question_id", f"question {n}")) if isinstance(q, dict) else f"question {n}"
            try:
                if not isinstance(q, dict) or "image_id" not in q:
                    raise Skip("bad_record", f"not a VQAv2 question: {str(q)[:80]}")
                image = vqav2_image(q, subtype, ctx)
            except Skip as e:
                stats.skip(e.code, item, e.message)
                continue
            yield item, image, (q["question"],) if isinstance(q.get("question"), str) and q["question"] else ()

    yield from _each_image_once(stats, items(), src.storage_options)


def _sample_questions(sample: dict) -> tuple[str, ...]:
    # A converted sample's questions: its turns' questions, or the expression a REC/REG sample refers by.
    turns = [q for q, _ in sample.get("turns") or []]
    referring = sample.get("referring")
    return tuple(turns + ([referring["expression"]] if isinstance(referring, dict) and referring.get("expression") else []))


_READERS = {"vlmevalkit_tsv": _vlmevalkit_tsv, "parquet": _parquet, "images": _images}


def iter_eval_records(src: EvalSource, stats: SourceStats) -> Iterator[EvalRecord]:
    """The records of one evaluation set: each image once (with the first question about it), and
    a record without image for each further question about an image; skips counted in ``stats``.

    Raises:
        UserError: a file that cannot be read, or is not in the format (naming it).
    """
    if src.format == "vqav2" and "annotations" not in src.files:
        return _vqav2_questions(src, stats)
    return _READERS.get(src.format, _annotations)(src, stats)
