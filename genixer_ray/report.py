"""``genixer-ray report RUN``: one self-contained HTML page about a run or a filter pass.

The page holds the per-task funnel, the contamination check (each matched run image beside the
evaluation image it matched, read back from its evaluation set), histograms of the filter scores
with their thresholds or band marked, thumbnails of kept and rejected samples (boxes drawn,
question and answer, reasons) and error counts by code with examples. It needs no network (styles inline, charts as SVG, images as
data URIs) and no script. Generated text is untrusted: every string is HTML-escaped.

Shards are read one at a time; the scores kept for the histograms are a bounded sample.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from genixer_ray.decontam.shown import contamination_section
from genixer_ray.errors import NotARunError
from genixer_ray.filters.decide import FUNNEL_ORDER
from genixer_ray.filters.health import alarm_text
from genixer_ray.filters.rules import Rule
from genixer_ray.image_dedup import image_dedup_text
from genixer_ray.inspection import inspect_run
from genixer_ray.overlap import overlapped
from genixer_ray.report_html import STYLE, histogram_svg, thumbnail
from genixer_ray.report_html import text as _e
from genixer_ray.schema import RATING_AXES, row_key
from genixer_ray.seeding import sample_id
from genixer_ray.store import RunStore
from genixer_ray.views import resolve_view, selector

SCORES = {
    "clip": "clip_score", "clip (paper's raw dot product)": "clip_raw_score", "consistency": "consistency_score",
    "judge P(Yes)": "judge_p_yes", "judge (paper's sampled score)": "judge_paper_score",
    **{f"rating: {axis}": f"rating_{axis}" for axis in RATING_AXES},
}
MAX_SCORES = 50_000  # per filter, for the histograms (a uniform sample beyond that)


@dataclass
class _Collected:
    scores: dict[str, list[float]] = field(default_factory=lambda: {f: [] for f in SCORES})
    seen: Counter = field(default_factory=Counter)
    kept: list[dict] = field(default_factory=list)  # rows of the view (kept: the filters' decision)
    rejected: list[dict] = field(default_factory=list)  # parsed rows outside it
    in_view: int = 0
    errors: dict[str, list[dict]] = field(default_factory=dict)
    contaminated: dict[str, dict] = field(default_factory=dict)  # a row per matched image (or question), by image id


def _collect(store: RunStore, per_column: int, rng: random.Random, condition: str) -> tuple[_Collected, dict[int, list[dict]]]:
    """Scores, rules and the sample rows (in the view ``condition`` or not), shard by shard (a few
    read at a time on an object store, :func:`~genixer_ray.overlap.overlapped`); rows to show by shard."""
    c = _Collected()
    show: dict[int, list[dict]] = {}
    shards = sorted(store.committed())
    marked = selector(condition).alias("_in_view")
    read = lambda k: store.read_frame(store.shard_name(k)).with_columns(marked)  # noqa: E731
    for k, frame in zip(shards, overlapped(read, shards, store.requests_in_flight), strict=True):
        for row in frame.to_dicts():
            if row.get("contamination_tier") and row["image_id"] not in c.contaminated and len(c.contaminated) < per_column:
                c.contaminated[row["image_id"]] = row
                show.setdefault(k, []).append(row)
            for f, col in SCORES.items():
                v = row.get(col)
                if v is None or v != v:  # unscored or NaN
                    continue
                c.seen[f] += 1
                if len(c.scores[f]) < MAX_SCORES:
                    c.scores[f].append(float(v))
                elif (j := rng.randrange(c.seen[f])) < MAX_SCORES:
                    c.scores[f][j] = float(v)
            if row["status"] != "ok":
                shown = c.errors.setdefault(row.get("error_code") or "error", [])
                if len(shown) < 3:
                    shown.append(row)
                continue
            c.in_view += row["_in_view"]
            bucket = c.kept if row.pop("_in_view") else c.rejected
            if len(bucket) < per_column:
                bucket.append(row)
                if c.contaminated.get(row["image_id"]) is not row:
                    show.setdefault(k, []).append(row)
    return c, show


def _attach_images(store: RunStore, show: dict[int, list[dict]], storage_options: dict) -> None:
    """Read the planned image of each shown row (its source, or the plan's inline bytes)."""
    import fsspec

    for k, rows in show.items():
        planned = store.planned_images(k)
        for row in rows:
            try:
                data = planned.get(row["image_id"], {}).get("data")
                if data is None:
                    with fsspec.open(row["source"], "rb", **storage_options) as f:
                        data = f.read()
                row["_thumb"] = thumbnail(data, row)
            except Exception as e:  # the image moved or cannot be read: the card says so
                row["_thumb_error"] = f"{type(e).__name__}: {e}"


def _card(row: dict) -> str:
    scores = " · ".join(f"{f} {row[c]:.3f}" for f, c in SCORES.items() if row.get(c) is not None and row[c] == row[c])
    reasons = ", ".join(row.get("reject_reasons") or [])
    turns = row.get("turns") or [{"question": row.get("question"), "answer": row.get("answer")}]
    qa = "".join(f"<p><b>Q</b> {_e(t['question'])}<br><b>A</b> {_e(t['answer'])}</p>" for t in turns)
    if "_thumb" in row:
        img = f"<img src='{row['_thumb']}' alt='{_e(row['image_id'])}'>"
    else:
        img = f"<div class='noimg'>image not readable: {_e(row.get('_thumb_error'))}</div>"
    return (
        f"<div class='card'>{img}<div class='meta'><code>{_e(sample_id(*row_key(row)))}</code> "
        f"<span class='task'>{_e(row.get('parsed_task') or row.get('task'))}</span></div>{qa}"
        f"<div class='scores'>{_e(scores)}</div>"
        + (f"<div class='reasons'>rejected: {_e(reasons)}</div>" if reasons else "")
        + "</div>"
    )


def _alarms(alarms: list[dict]) -> str:
    """The rating judge's health alarms (none: nothing is shown)."""
    if not alarms:
        return ""
    items = "".join(f"<li>{_e(alarm_text(a))}</li>" for a in alarms[:50])
    more = f"<p class='muted'>and {len(alarms) - 50} more (inspect --json lists them all)</p>" if len(alarms) > 50 else ""
    return f"<h2>Rating judge health</h2><ul class='alarms'>{items}</ul>{more}"


def _funnel_table(funnel: dict) -> str:
    steps = [s for s in FUNNEL_ORDER if any(s in c for c in funnel.values())]
    head = "".join(f"<th>{_e(s)}</th>" for s in steps)
    body = "".join(
        f"<tr><td>{_e(t)}</td>" + "".join(f"<td>{c.get(s, 0)}</td>" for s in steps) + "</tr>" for t, c in sorted(funnel.items())
    )
    return f"<table><tr><th>task</th>{head}</tr>{body}</table>"


def _diversity_table(diversity: dict) -> str:
    if not diversity:
        return "<p class='muted'>not measured (a run written before diversity.json)</p>"
    cols = ("samples", "unique_questions", "distinct_1", "distinct_2", "question_clusters", "top20_cluster_share", "opening_entropy_bits")
    body = "".join(
        f"<tr><td>{_e(t)}</td>" + "".join(f"<td>{_e(d.get(c))}</td>" for c in cols)
        + f"<td>{_e((d.get('answer_words') or {}).get('p50'))}</td><td>"
        + "<br>".join(f"{c['size']} &times; {_e(c['example'])}" for c in d.get("largest_clusters", [])) + "</td></tr>"
        for t, d in sorted(diversity.items())
    )
    head = "".join(f"<th>{_e(c.replace('_', ' '))}</th>" for c in ("task", *cols, "answer words (median)", "largest question clusters"))
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(
    run: str, out: str, *, storage_options: dict | None = None, per_column: int = 12, seed: int = 0, view: str = "kept",
) -> dict:
    """Write the HTML report of a run or a filter pass to ``out`` (any fsspec URL); return counts.

    Args:
        run: a run folder (``{output.path}/{name}``) or a filter pass's (``.../filtered/{name}``).
        out: the HTML file to write.
        storage_options: fsspec options for the run, its images and ``out``.
        per_column: how many kept and how many rejected samples to show.
        seed: for the uniform sample of scores kept beyond :data:`MAX_SCORES`.

    Raises:
        NotARunError: ``run`` has no committed shard.
    """
    import fsspec

    so = storage_options or {}
    info = inspect_run(run, storage_options=so)
    if not info["shards"]["committed"]:
        raise NotARunError(f"no committed shards under {run}")
    store = RunStore(run, so)
    name, condition = resolve_view(store, view)
    c, show = _collect(store, per_column, random.Random(seed), condition)
    inside, outside = ("kept", "rejected") if name == "kept" else (f"in view {name}: {condition}", "parsed, not in it")
    _attach_images(store, show, so)
    rules = [Rule(**r) for r in info["rules"] if r["filter"] != "dedup"]  # as data, from the shards' markers (dedup scores nothing)
    hists = "".join(
        f"<div><h3>{_e(f)} ({c.seen[f]} scored; rule: {_e(', '.join(r.text for r in rules if r.score == col) or 'none')})</h3>"
        f"{histogram_svg(c.scores[f], sorted({m for r in rules if r.score == col for m in r.marks}))}</div>"
        for f, col in SCORES.items()
        if c.seen[f]
    )
    errors = "".join(
        f"<tr><td><code>{_e(code)}</code></td><td>{info['by_error'].get(code, len(rows))}</td><td>"
        + "<br>".join(f"{_e(r['image_id'])} ({_e(r.get('error_stage'))}): {_e(r.get('error_message'))}"
                      + (f" <span class='muted'>text: {_e((r.get('text') or '')[:200])}</span>" if r.get("text") else "")
                      for r in rows)
        + "</td></tr>"
        for code, rows in sorted(c.errors.items())
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>genixer-ray report: {_e(info['name'])}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<style>{STYLE}</style></head><body>
<h1>genixer-ray report: {_e(info['name'])}</h1>
<p>{_e(info['kind'])} at <code>{_e(info['url'])}</code> · {info['rows']} rows · ok {info['by_status'].get('ok', 0)} ·
errors {sum(info['by_error'].values())} · kept {info['kept']} · shards {info['shards']['committed']} committed,
{info['shards']['pending']} pending · config {_e(info['config_digest'])} · written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC</p>
<h2>Funnel per task</h2>{_funnel_table(info['funnel'])}
{f"<p>Image dedup: {_e(image_dedup_text(info['image_dedup']))}.</p>" if info.get('image_dedup') else ""}
{contamination_section(store, list(c.contaminated.values()), info['contamination'], so)}
{_alarms(info['alarms'])}
<h2>Diversity per task</h2>{_diversity_table(info.get('diversity') or {})}
<h2>Filter scores</h2><p class="muted">Dashed red lines: the thresholds or band edges the rows were judged by.</p>
<div class="hists">{hists or "<p class='muted'>no filter scored this run</p>"}</div>
<h2>Samples</h2><p class="muted">Question boxes orange, answer boxes green, points blue.</p>
<div class="cols"><div class="col"><h3>{_e(inside)} ({c.in_view})</h3><div class="grid">{''.join(map(_card, c.kept)) or "<p class='muted'>none</p>"}</div></div>
<div class="col"><h3>{_e(outside)}</h3><div class="grid">{''.join(map(_card, c.rejected)) or "<p class='muted'>none</p>"}</div></div></div>
<h2>Errors by code</h2>{f"<table><tr><th>code</th><th>rows</th><th>examples</th></tr>{errors}</table>" if errors else "<p class='muted'>none</p>"}
</body></html>
"""
    with fsspec.open(out, "w", encoding="utf-8", **so) as f:
        f.write(page)
    return {"output": out, "rows": info["rows"], "kept_shown": len(c.kept), "rejected_shown": len(c.rejected),
            "error_codes": len(c.errors), "in_view": c.in_view}
