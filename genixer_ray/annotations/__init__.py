"""Public annotation releases -> canonical generator training samples (Genixer, step 1).

Each format reads the files exactly as the dataset's authors publish them (see docs/guide/annotations.md's
table and each reader's docstring). A sample is ``{"sample_id", "image", "task", "turns":
[(question, answer), ...]}`` with boxes normalized to [0, 1] and written as text; REC and REG
samples carry ``referring`` instead of turns (their question phrasing is the prompt profile's).

A record that cannot be converted is skipped and counted by reason in the source's
:class:`SourceStats`; a source fails as a whole (:class:`ConversionError`) only when a required
file is missing or unreadable, or when nothing in it converts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from genixer_ray.annotations import generic, grounding
from genixer_ray.annotations.base import ConversionError, Skip, SourceStats

__all__ = ["FORMATS", "ConversionError", "Format", "SourceStats", "convert_source"]


@dataclass(frozen=True)
class Format:
    """One published annotation format: the files it needs and its two reading steps."""

    name: str
    files: tuple[str, ...]  # the file roles a source must name
    records: Callable[[Any], Iterator[tuple[str, Any]]]
    samples: Callable[[Any, Any], Iterator[dict]]
    optional: tuple[str, ...] = ()  # file roles a source may name


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("llava", ("path",), generic.llava_records, generic.llava_samples),
        Format("vqav2", ("questions", "annotations"), generic.vqav2_records, generic.vqav2_samples),
        Format("gqa", ("path",), generic.gqa_records, generic.gqa_samples),
        Format("aokvqa", ("path",), generic.aokvqa_records, generic.aokvqa_samples),
        Format("refer", ("refs", "instances"), grounding.refer_records, grounding.refer_samples),
        Format("rec_jsonl", ("path",), grounding.rec_jsonl_records, grounding.rec_jsonl_samples),
        Format("pointqa", ("path",), grounding.pointqa_records, grounding.pointqa_samples),
        Format("flickr30k", ("sentences", "annotations"), grounding.flickr30k_records, grounding.flickr30k_samples, ("index",)),
        Format("gpt4gen_rd", ("path",), grounding.gpt4gen_rd_records, grounding.gpt4gen_rd_samples),
        Format("gpt4gen_qca", ("path",), grounding.gpt4gen_records, grounding.gpt4gen_qca_samples),
    )
}


@dataclass(frozen=True)
class SourceContext:
    """What a reader needs: the source's files by role, its image root, storage options, splits."""

    files: dict[str, str]
    image_root: str
    storage_options: dict
    splits: tuple[str, ...] = ()


def convert_source(
    fmt: str, files: dict[str, str], *, image_root: str, storage_options: dict | None = None,
    splits: tuple[str, ...] = (), stats: SourceStats | None = None,
) -> Iterator[dict]:
    """Yield the canonical samples of one annotation source, counting skipped records in ``stats``.

    Args:
        fmt: a key of :data:`FORMATS`.
        files: the source's files by role (``path``; ``questions`` and ``annotations``; ...), any
            fsspec URL; folders for Flickr30k's ``sentences`` and ``annotations``.
        image_root: the folder the records' image names are relative to.
        storage_options: fsspec options for the files and the images.
        splits: refer only: the splits to read (``train``, ``val``, ``testA``, ...); empty: all.
        stats: receives the counts (records, samples, skips by reason with examples).

    Raises:
        ConversionError: an unknown format, a required file missing or not in the format, or no
            record converted (raised after the last record, naming the reasons).
    """
    if fmt not in FORMATS:
        raise ConversionError(f"unknown format {fmt!r}; known: {sorted(FORMATS)}")
    spec = FORMATS[fmt]
    missing = [r for r in spec.files if r not in files]
    if missing:
        raise ConversionError(f"format {fmt!r} needs the file(s) {missing}")
    label = f"{fmt}:{files[spec.files[0]].rstrip('/').rsplit('/', 1)[-1]}"
    stats = stats if stats is not None else SourceStats(label)
    ctx = SourceContext(dict(files), image_root, storage_options or {}, tuple(splits))
    for where, rec in spec.records(ctx):
        stats.records += 1
        try:
            if isinstance(rec, Skip):
                raise rec
            out = list(spec.samples(rec, ctx))
        except Skip as e:
            stats.skip(e.code, where, e.message)
            continue
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            # A field missing or of the wrong type: the record is not in the format.
            stats.skip("malformed", where, f"{type(e).__name__}: {e}")
            continue
        for k, sample in enumerate(out):
            sample["sample_id"] = f"{label}:{where.replace(' ', '')}:{k}"
            yield sample
        stats.samples += len(out)
    if stats.samples == 0:
        examples = "; ".join(e for shown in stats.examples.values() for e in shown[:1])
        raise ConversionError(f"nothing in {label} converted ({stats.line()}){': ' + examples if examples else ''}")
