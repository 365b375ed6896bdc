"""``genixer-ray verify RUN``: check that a finished run (or filter pass) holds what it promises.

* every planned (image id, sample) (a run's plan, each image times its ``samples_per_image``; for
  a filter pass, the source run's committed rows) is in exactly one committed row, in the shard
  it was planned in;
* each commit marker's row count and sha256 match its shard file;
* no shard file exists without a marker, no marker without its shard file;
* nothing else is in the run's folders but what the run itself writes (:data:`OWN_OBJECTS`): a
  shard copied under another name, a partial upload or a foreign file is reported
  (``foreign_object``), since a reader globbing ``data/*.parquet`` would read it.

Shards are read a few at a time (8 on an object store, whose round trips then overlap; one at a
time on a local disk), each file once for its keys and its checksum; the set of keys seen is the
only thing held for the whole run. Keys are shown as
:func:`~genixer_ray.seeding.sample_id` writes them (``img#2``: sample 2 of ``img``).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field

from genixer_ray.errors import NotARunError
from genixer_ray.overlap import overlapped
from genixer_ray.schema import row_key
from genixer_ray.seeding import sample_id
from genixer_ray.store import RunStore, plan_samples, source_run

SHOW = 5  # examples per problem
# What a run (or a filter pass) writes into its folder; a pass's own folder is under filtered/ and is
# verified on its own. Shards without markers are reported by name (shard_without_marker).
OWN_OBJECTS = re.compile(
    r"plan/part-\d{6}\.parquet|plan/_COMPLETE\.json|data/shard-\d{6}\.parquet|commits/shard-\d{6}\.json"
    r"|(manifest|run|filter|diversity)\.json|fingerprints\.parquet|report\.html|decontam/index-[0-9a-f]{16}\.(npz|json)|filtered/.*"
    r"|dedup/images\.json|dedup/(images|fingerprints)/shard-\d{6}\.parquet"
)


@dataclass
class Verdict:
    """What verification found; ``ok`` when no problem was found."""

    url: str
    kind: str
    planned: int = 0
    rows: int = 0
    problems: dict[str, list[str]] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)

    def add(self, problem: str, example: str) -> None:
        """Count one problem and keep the first few examples."""
        self.counts[problem] += 1
        shown = self.problems.setdefault(problem, [])
        if len(shown) < SHOW:
            shown.append(example)

    @property
    def ok(self) -> bool:
        """True when nothing is missing, doubled, misplaced or mismatched."""
        return not self.counts

    def lines(self) -> list[str]:
        """The verdict as lines a person reads."""
        if self.kind == "published dataset":
            head = f"{self.kind} {self.url}: {self.rows} rows for {self.planned} selected rows of its run"
            fine = "every file matches its marker, every part its run shards"
        else:
            head = f"{self.kind} {self.url}: {self.rows} committed rows for {self.planned} planned (image, sample) keys"
            fine = "every key exactly once, every marker matches its shard"
        if self.ok:
            return [f"{head}: OK ({fine})"]
        out = [f"{head}: {sum(self.counts.values())} problem(s)"]
        for p, n in sorted(self.counts.items()):
            out.append(f"  {p}: {n} (e.g. {', '.join(self.problems[p])})")
        return out


def _keys(store: RunStore, rel: str, samples: int = 1) -> list[tuple[str, int]]:
    """The ``(image_id, sample)`` of each row of a shard file, or of each planned (image, sample)
    of a plan file (``samples`` per image); only those columns are read."""
    with store.fs.open(store.path(rel), "rb") as f:
        return _keys_in(f, samples)


def _keys_in(parquet, samples: int = 1) -> list[tuple[str, int]]:
    """:func:`_keys` of an open Parquet file (a file object or a ``pyarrow.BufferReader``)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(parquet)
    columns = [c for c in ("image_id", "sample") if c in pf.schema_arrow.names]
    rows = pf.read(columns=columns).to_pylist()
    return [(i, k) for i, s in map(row_key, rows) for k in (range(samples) if samples > 1 else [s])]


def foreign_objects(store: RunStore) -> list[str]:
    """The objects under the run's folder that the run did not write (relative names, sorted)."""
    return [n for n in store.relative_names() if not OWN_OBJECTS.fullmatch(n)]


def _check_shard(v: Verdict, k: int, want: list, got: list | None, marker: dict, digest: str, seen: dict) -> None:
    """Add shard ``k``'s findings: its planned keys ``want`` against the keys it holds (``got``,
    ``None`` when not committed), its marker and checksum; ``seen`` maps each key to its shard."""
    v.planned += len(want)
    if got is None:
        for i in want[:SHOW]:
            v.add("missing", f"{sample_id(*i)} (shard {k} not committed)")
        v.counts["missing"] += max(len(want) - SHOW, 0)
        return
    v.rows += len(got)
    if marker.get("rows") != len(got):
        v.add("marker_count_mismatch", f"shard {k}: marker says {marker.get('rows')}, file holds {len(got)}")
    if "sha256" in marker and digest != marker["sha256"]:
        v.add("checksum_mismatch", f"shard {k}")
    want_set, counts = set(want), Counter(got)
    for i in sorted(want_set - set(counts)):
        v.add("missing", f"{sample_id(*i)} (shard {k})")
    for i, n in sorted(counts.items()):
        if i not in want_set:
            v.add("not_planned", f"{sample_id(*i)} in shard {k}")
        if n > 1:
            v.add("doubled", f"{sample_id(*i)} {n} times in shard {k}")
        if i in seen:
            v.add("doubled", f"{sample_id(*i)} in shards {seen[i]} and {k}")
        seen.setdefault(i, k)


def verify_run(url: str, *, storage_options: dict | None = None) -> Verdict:
    """Verify the run or filter pass at ``url`` (see the module doc).

    Raises:
        NotARunError: nothing at ``url`` looks like a run or a filter pass.
    """
    store = RunStore(url, storage_options)
    is_pass = store.read_json("filter.json") is not None
    source = RunStore(source_run(store.url), storage_options)
    if source.plan() is None:
        raise NotARunError(f"no run at {url} (no complete plan)")
    v = Verdict(store.url, "filter pass" if is_pass else "generation run")
    # What each shard must hold: the plan's ids, or for a pass the source run's committed rows.
    planned_shards = sorted(source.committed()) if is_pass else range(source.plan()["shards"])
    planned_rel = source.shard_name if is_pass else source.plan_name
    samples = 1 if is_pass else plan_samples(source.plan())
    markers = store.committed()
    files = store.shard_numbers("data", ".parquet")
    for k in sorted(files - markers):
        v.add("shard_without_marker", store.shard_name(k))
    for k in sorted(markers - files):
        v.add("marker_without_shard", store.marker_name(k))
    for name in foreign_objects(store):
        v.add("foreign_object", name)
    seen: dict[tuple[str, int], int] = {}

    def read(k: int) -> tuple[list, list | None, dict, str]:
        # Shard k's planned keys and, when committed, its keys, marker and digest (from one read of the file).
        import pyarrow as pa

        want = _keys(source, planned_rel(k), samples)
        if k not in markers or k not in files:
            return want, None, {}, ""
        data = store.fs.cat_file(store.path(store.shard_name(k)))
        return want, _keys_in(pa.BufferReader(data)), store.read_json(store.marker_name(k)) or {}, hashlib.sha256(data).hexdigest()

    # The reads overlap on an object store; the findings are added in shard order.
    for k, found in zip(planned_shards, overlapped(read, planned_shards, store.requests_in_flight), strict=True):
        _check_shard(v, k, *found, seen)
    for k in sorted(markers & files - set(planned_shards)):  # committed shards no plan names
        for i in _keys(store, store.shard_name(k))[:SHOW]:
            v.add("not_planned", f"{sample_id(*i)} in unplanned shard {k}")
    return v


def _published_file(v: Verdict, out: RunStore, rel: str, want: dict) -> int:
    """Check one published file against its part marker's entry (sha256; rows from the Parquet
    footer or the tar's keys); return the rows it holds (0 when it is missing or altered)."""
    import io
    import tarfile

    import pyarrow.parquet as pq

    try:
        data = out.fs.cat_file(out.path(rel))
    except FileNotFoundError:
        v.add("missing_file", rel)
        return 0
    if hashlib.sha256(data).hexdigest() != want.get("sha256"):
        v.add("checksum_mismatch", rel)
        return 0
    if rel.endswith(".parquet"):
        rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
    else:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            rows = len({m.name.split(".", 1)[0] for m in tar.getmembers()})
    if rows != want.get("rows"):
        v.add("row_count_mismatch", f"{rel}: marker says {want.get('rows')}, file holds {rows}")
    return rows


def verify_published(url: str, *, storage_options: dict | None = None) -> Verdict:
    """Verify a folder written by ``genixer-ray publish`` against its markers and its run.

    Every file a part marker names exists with its sha256 and row count; nothing else is in the
    folder but the card and the markers (``foreign_object``: a copy, a partial upload); the card is
    the one publish wrote; and against the run (where it can be read with ``storage_options``):
    each part's run shards are unchanged since (their commit markers' sha256), they hold as many
    selected rows as the part (less those its cluster cap left out), and every committed shard of
    the run is in a part.
    """
    from genixer_ray.publish import MARKERS
    from genixer_ray.views import selector, view_columns

    out = RunStore(url, storage_options)
    v = Verdict(out.url, "published dataset")
    summary = out.read_json(f"{MARKERS}/publish.json")
    if summary is None:
        v.add("publish_unfinished", f"no {MARKERS}/publish.json: run publish again to finish")
        return v
    parts = [out.read_json(f"{MARKERS}/part-{p:05d}.json") for p in range(summary["parts"])]
    claimed = {"README.md", f"{MARKERS}/publish.json", *(f"{MARKERS}/part-{p:05d}.json" for p in range(len(parts))), *summary["files"]}
    for name in out.relative_names():
        if name not in claimed:
            v.add("foreign_object", name)
    try:
        if hashlib.sha256(out.read_bytes("README.md")).hexdigest() != summary.get("card_sha256"):
            v.add("card_changed", "README.md is not the card publish wrote")
    except FileNotFoundError:
        v.add("missing_file", "README.md (the dataset card)")
    counted = "data/" if "datasets" in summary["options"]["layouts"] else "webdataset/"  # rows are counted in one layout
    for rel, want in sorted(summary["files"].items()):
        rows = _published_file(v, out, rel, want)
        v.rows += rows if rel.startswith(counted) else 0
    run = RunStore(summary["source"], storage_options)
    markers = {m["shard"]: m for m in run.markers()}
    if not markers:
        v.add("run_not_found", f"{summary['source']} (pass --storage-options to read it)")
        return v
    condition = summary["options"]["view"]["condition"]
    view, columns = selector(condition), view_columns(condition)
    published = {int(k) for part in parts if part for k in part["shards"]}
    for k in sorted(set(markers) - published):
        v.add("shard_not_published", f"run shard {k} (committed after publishing: publish again)")
    for p, part in enumerate(parts):
        if part is None:
            v.add("missing_marker", f"{MARKERS}/part-{p:05d}.json")
            continue
        if any(markers.get(int(k), {}).get("sha256") != digest for k, digest in part["shards"].items()):
            v.add("run_changed", f"part {p}: its run shards changed since publishing")
            continue
        expected = sum(run.read_frame(run.shard_name(int(k)), columns).filter(view).height for k in part["shards"])
        expected -= (part.get("left_out") or {}).get("rows", 0)  # rows the cluster cap left out of the part
        v.planned += expected
        if expected != part["rows"]:
            v.add("row_count_mismatch", f"part {p}: the run holds {expected} selected rows, the part {part['rows']}")
    return v
