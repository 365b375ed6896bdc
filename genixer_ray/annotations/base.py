"""What every annotation reader shares: errors, skip counts, file access and box normalization.

A record that cannot be converted raises :class:`Skip` with a stable reason; the driver counts it
in the source's :class:`SourceStats` and goes on. :class:`ConversionError` is for a source that
cannot be used at all (a required file missing or in another format, nothing convertible).
"""

from __future__ import annotations

import io
import json
import math
import pickle
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec

from genixer_ray.errors import RowError, UserError
from genixer_ray.paths import escapes_root, resolve_under_root

EXAMPLES_PER_REASON = 3


class ConversionError(UserError):
    """An annotation source that cannot be converted at all; the message names the file."""


class Skip(RowError):
    """One record that cannot be converted; ``code`` is a stable, countable reason."""


@dataclass
class SourceStats:
    """Counts of one source: records read, samples made, records skipped by reason (with examples)."""

    source: str
    records: int = 0
    samples: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, where: str, message: str) -> None:
        """Count one skipped record and keep the first few messages of each reason."""
        self.skipped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES_PER_REASON:
            shown.append(f"{where}: {message}"[:300])

    def as_dict(self) -> dict:
        """JSON-ready counts (for the training summary)."""
        return {
            "source": self.source, "records": self.records, "samples": self.samples,
            "skipped": dict(sorted(self.skipped.items())), "examples": self.examples,
        }

    def line(self) -> str:
        """One human line: ``source: N records -> M samples; skipped: reason=k, ...``."""
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"{self.source}: {self.records} records -> {self.samples} samples; skipped: {skipped}"


def open_binary(url: str, storage_options: dict):
    """An fsspec file opened for reading; a missing file is a :class:`ConversionError`."""
    try:
        return fsspec.open(url, "rb", **storage_options).open()
    except FileNotFoundError:
        raise ConversionError(f"no file at {url}") from None


def load_json(url: str, storage_options: dict) -> Any:
    """One JSON document (``.json``)."""
    with open_binary(url, storage_options) as f:
        try:
            return json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConversionError(f"{url} is not JSON: {e}") from None


def iter_json_records(url: str, storage_options: dict) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` for a JSON list or a JSON Lines file (chosen by the ``.jsonl`` suffix).

    A JSON Lines line that is not JSON is yielded as a :class:`Skip` (the driver counts it).
    """
    if not url.endswith(".jsonl"):
        data = load_json(url, storage_options)
        if not isinstance(data, list):
            raise ConversionError(f"{url}: expected a JSON list of records, got {type(data).__name__}")
        yield from ((f"record {n}", r) for n, r in enumerate(data))
        return
    with open_binary(url, storage_options) as f:
        for n, line in enumerate(io.TextIOWrapper(f, encoding="utf-8", errors="replace")):
            if not line.strip():
                continue
            try:
                yield f"line {n + 1}", json.loads(line)
            except json.JSONDecodeError as e:
                yield f"line {n + 1}", Skip("bad_json", str(e))


class _PlainUnpickler(pickle.Unpickler):
    # A pickle can name any importable callable and run it while loading. The refer toolkit's
    # files hold only lists, dicts, strings and numbers, which need no global at all: refuse them.
    def find_class(self, module: str, name: str):
        raise ConversionError(
            f"the pickle refers to {module}.{name}; only plain containers and scalars are accepted "
            "(a refer refs(*).p file holds nothing else), so it was not loaded"
        )


def load_plain_pickle(url: str, storage_options: dict) -> Any:
    """Unpickle a file that may hold only lists, dicts, tuples, strings, numbers, booleans and None.

    The refer files were written by Python 2; their byte strings are decoded as UTF-8.

    Raises:
        ConversionError: the file is missing, is not a pickle, or refers to any class or function.
    """
    with open_binary(url, storage_options) as f:
        try:
            return _PlainUnpickler(f, encoding="utf-8", errors="replace").load()
        except ConversionError as e:
            raise ConversionError(f"{url}: {e}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
            raise ConversionError(f"{url} is not a readable pickle: {type(e).__name__}: {e}") from None


def image_url(name: Any, image_root: str) -> str:
    """The image's URL from a record's relative name; a name that climbs out of the root is skipped."""
    if not isinstance(name, str) or not name:
        raise Skip("no_image", f"names no image ({name!r})")
    url = resolve_under_root(name, image_root)
    if url is None or (not name.startswith("/") and escapes_root(url, image_root)):  # links followed
        raise Skip("image_escapes_root", f"image {name!r} escapes {image_root!r}")
    return url


def image_size(url: str, width: Any, height: Any, storage_options: dict) -> tuple[float, float]:
    """The image's size: the record's ``width``/``height`` when given, else read from the file header."""
    if width and height:
        w, h = _number(width), _number(height)
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with fsspec.open(url, "rb", **storage_options) as f:
                w, h = Image.open(f).size  # the header only
        except FileNotFoundError:
            raise Skip("image_missing", f"no image at {url}") from None
        except (UnidentifiedImageError, OSError) as e:
            raise Skip("image_unreadable", f"{url}: {e}") from None
    if w <= 0 or h <= 0:
        raise Skip("bad_size", f"image size {w} x {h}")
    return float(w), float(h)


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise Skip("bad_box", f"{v!r} is not a finite number")
    return float(v)


def _clamp(v: float) -> float:
    # Annotations routinely overshoot the border by a pixel (Flickr30k's 1-based boxes, COCO's
    # float rounding); clamping is what Shikra's and Genixer's own normalization does.
    return min(max(v, 0.0), 1.0)


def norm_xyxy(box: Any, w: float, h: float) -> list[float]:
    """A pixel ``[x1, y1, x2, y2]`` box normalized to [0, 1] by the image size."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise Skip("bad_box", f"box {box!r} is not four numbers")
    x1, y1, x2, y2 = (_number(v) for v in box)
    out = [_clamp(x1 / w), _clamp(y1 / h), _clamp(x2 / w), _clamp(y2 / h)]
    if not (out[0] < out[2] and out[1] < out[3]):
        raise Skip("bad_box", f"box {list(box)} is empty or inverted in a {w:g} x {h:g} image")
    return out


def norm_xywh(box: Any, w: float, h: float) -> list[float]:
    """A pixel ``[x, y, width, height]`` box (COCO's convention) normalized to ``[x1, y1, x2, y2]``."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise Skip("bad_box", f"box {box!r} is not four numbers")
    x, y, bw, bh = (_number(v) for v in box)
    return norm_xyxy([x, y, x + bw, y + bh], w, h)


def norm_point(point: Any, w: float, h: float) -> list[float]:
    """A pixel ``[x, y]`` point normalized to [0, 1]."""
    if not isinstance(point, (list, tuple)) or len(point) != 2:
        raise Skip("bad_point", f"point {point!r} is not two numbers")
    return [_clamp(_number(point[0]) / w), _clamp(_number(point[1]) / h)]


def text(v: Any, what: str) -> str:
    """A non-empty string field, stripped."""
    if not isinstance(v, str) or not v.strip():
        raise Skip(f"no_{what}", f"{what} is {v!r}")
    return v.strip()
