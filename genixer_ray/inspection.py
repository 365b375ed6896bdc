"""``genixer-ray inspect RUN``: what a run or a filter pass holds, from its markers and manifest.

Reads only the small files (commit markers, plan summary, manifest, ``filter.json``), never the
shards, so it answers at once for a run of any size, finished or still running.
"""

from __future__ import annotations

import hashlib
import json

from genixer_ray.errors import NotARunError
from genixer_ray.filters.decide import FILTERS
from genixer_ray.filters.health import alarm_text
from genixer_ray.image_dedup import image_dedup_text
from genixer_ray.store import RunStore, source_run


def _digest(obj) -> str | None:
    if obj is None:
        return None
    return "sha256:" + hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _view_counts(store: RunStore, view: str) -> dict:
    """The rows of a view, per task: reads the shards' columns the view's condition names (not only the markers)."""
    from genixer_ray.views import resolve_view, selector, view_columns

    name, condition = resolve_view(store, view)
    rows = store.read_rows(sorted({"parsed_task", *view_columns(condition)}))
    selected = rows.filter(selector(condition)) if rows.height else rows
    by_task = dict(selected.group_by("parsed_task").len().iter_rows()) if selected.height else {}
    return {"name": name, "condition": condition, "rows": selected.height, "by_task": {str(k): v for k, v in sorted(by_task.items(), key=str)}}


def inspect_run(url: str, *, storage_options: dict | None = None, view: str | None = None) -> dict:
    """A JSON-ready summary of the run (or filter pass) at ``url``.

    Keys: ``url``, ``name``, ``kind`` (``generation run`` or ``filter pass``), ``rows``,
    ``by_status``, ``by_error``, ``by_task``, ``kept``, ``shards`` (``planned``, ``committed``,
    ``pending``), ``funnel`` (per task), ``pass_rates`` (per filter: rows passing / rows reaching
    it, all tasks), ``contamination`` (rows per ``benchmark/tier`` matched), ``image_dedup`` (what it saved:
    :func:`genixer_ray.image_dedup.saved`; ``None`` when it did not run), ``config_digest`` (of the
    recorded, credential-masked config), ``alarms`` (the rating judge's, per shard and axis), ``finished_at``, ``rules`` (the filter rules applied, as data: :mod:`genixer_ray.filters.rules`) and ``diversity`` (per task, from
    ``diversity.json``: :mod:`genixer_ray.diversity`); with ``view`` (a name or ``NAME=CONDITION``,
    :mod:`genixer_ray.views`) also ``view``: its rows in all and per task, read from the shards.

    Raises:
        NotARunError: nothing at ``url`` looks like a run or a filter pass.
    """
    from genixer_ray.summary import RunSummary

    store = RunStore(url, storage_options)
    manifest = store.read_json("manifest.json") or {}
    settings = store.read_json("filter.json")
    summary = RunSummary(output=store.url)
    for m in store.markers():
        summary.add_marker(m)
    committed = len(store.committed())
    if settings is not None:  # a filter pass: its shards are the source run's committed ones
        kind, config = "filter pass", settings
        planned = len(RunStore(source_run(store.url), storage_options).committed())
    else:
        plan = store.plan()
        if plan is None:
            raise NotARunError(f"no run at {url} (no plan and no filter settings)")
        kind, config, planned = "generation run", manifest.get("config") or {"input": plan.get("input")}, plan["shards"]
    totals = {step: sum(c.get(step, 0) for c in summary.funnel.values()) for step in ("parsed", *FILTERS)}
    rates, reaching = {}, totals["parsed"]
    for f in FILTERS:
        if any(f in c for c in summary.funnel.values()):
            rates[f] = round(totals[f] / reaching, 4) if reaching else None
            reaching = totals[f]
    counts = summary.counts()
    out = {
        "url": store.url, "name": store.url.rsplit("/", 1)[-1], "kind": kind,
        "rows": counts["rows"], "by_status": counts["by_status"], "by_error": counts["by_error"], "by_task": counts["by_task"],
        "kept": counts["kept"], "shards": {"planned": planned, "committed": committed, "pending": max(planned - committed, 0)},
        "funnel": counts["funnel"], "pass_rates": rates, "contamination": counts.get("contamination", {}), "rules": counts.get("rules", []),
        "alarms": counts.get("alarms", []), "image_dedup": manifest.get("image_dedup"),
        "config_digest": _digest(config),
        "finished_at": manifest.get("finished_at"), "diversity": store.read_json("diversity.json") or {},
    }
    return out | ({"view": _view_counts(store, view)} if view else {})


def format_inspection(info: dict) -> str:
    """The summary as lines a person reads."""
    def kv(d: dict) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(d.items())) or "none"

    s = info["shards"]
    lines = [
        f"{info['kind']} {info['name']} at {info['url']}",
        f"  rows: {info['rows']} ({kv(info['by_status'])}); kept: {info['kept']}",
        f"  errors by code: {kv(info['by_error'])}",
        f"  rows per task: {kv(info['by_task'])}",
        f"  contaminated rows by benchmark/tier: {kv(info['contamination'])}",
        *([f"  image dedup: {image_dedup_text(info['image_dedup'])}"] if info.get("image_dedup") else []),
        *(f"  diversity of {t}: {d['samples']} samples, {d['unique_questions']} unique questions, distinct-2 {d['distinct_2']}, "
          f"20 largest question clusters {d['top20_cluster_share']:.0%}, openings {d['opening_entropy_bits']} bits"
          for t, d in sorted(info["diversity"].items())),
        f"  shards: {s['committed']} of {s['planned']} committed, {s['pending']} pending",
        *(f"  rating alarm: {alarm_text(a)}" for a in info["alarms"][:10]),
        "  filter pass rates: " + (", ".join(f"{f} {r:.1%}" if r is not None else f"{f} -" for f, r in info["pass_rates"].items()) or "no filter ran"),
        f"  config digest: {info['config_digest']}; finished: {info['finished_at'] or 'not yet (no manifest)'}",
    ]
    if v := info.get("view"):
        lines.append(f"  view {v['name']} ({v['condition']}): {v['rows']} rows ({kv(v['by_task'])})")
    return "\n".join(lines)
