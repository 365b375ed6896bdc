"""The rating judge's health: alarms when an axis collapses in a shard, for the progress line and the report.

A judge that answers every sample with the same rating, or spreads little probability over the
five digits, rates nothing. Each shard's commit step checks every axis; the run goes on, and the
alarms are recorded in the shard's marker, printed as they happen and listed in the report.
"""

from __future__ import annotations

import math
from collections import Counter

from genixer_ray.config import RatingConfig


def collapse_alarms(rows: list[dict], cfg: RatingConfig) -> list[dict]:
    """The judge-health alarms of one shard's rows, per axis: one rating (rounded) holding at least
    ``collapse_share`` of the rated rows, or a mean confidence below ``min_confidence``.

    A shard with fewer than ``alarm_min_rows`` rated rows on an axis raises none for it."""
    alarms = []
    for axis in cfg.axes:
        rated = [r for r in rows if r.get(f"rating_{axis}") is not None and not math.isnan(r[f"rating_{axis}"])]
        if len(rated) < cfg.alarm_min_rows:
            continue
        rating, n = Counter(round(r[f"rating_{axis}"]) for r in rated).most_common(1)[0]
        if n / len(rated) >= cfg.collapse_share:
            alarms.append({"axis": axis, "kind": "collapsed", "rating": rating, "share": round(n / len(rated), 4), "rows": len(rated)})
        confidence = sum(r[f"rating_{axis}_confidence"] for r in rated) / len(rated)
        if confidence < cfg.min_confidence:
            alarms.append({"axis": axis, "kind": "low_confidence", "mean_confidence": round(confidence, 4), "rows": len(rated)})
    return alarms


def alarm_text(alarm: dict) -> str:
    """An alarm as a person reads it."""
    where = f"shard {alarm['shard']}: " if "shard" in alarm else ""
    if alarm["kind"] == "collapsed":
        return f"{where}axis {alarm['axis']} collapsed: rating {alarm['rating']} for {alarm['share']:.0%} of {alarm['rows']} rows"
    return f"{where}axis {alarm['axis']} unsure: mean confidence {alarm['mean_confidence']:.2f} over {alarm['rows']} rows"
