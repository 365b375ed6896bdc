"""Decisions from filter scores: each filter's pass/fail, a final ``keep`` and the rejection reasons.

Applied to one shard's rows when the shard is committed, so every decision is stored next to the
score and the rule it was judged by. Threshold and band decisions depend only on the row; the
judge's ``top_fraction`` policy ranks rows within each task of the shard (the shard is the unit
of commit; with shards of a few hundred rows it matches the run-wide fraction closely).

A filter that does not apply to a row (no score and no reason: it was not enabled, or the row is
a dialogue for self-consistency) leaves its ``*_pass`` null and does not count against the row.
"""

from __future__ import annotations

from genixer_ray.config import FiltersConfig
from genixer_ray.filters.dedup import decide_dedup
from genixer_ray.filters.health import collapse_alarms
from genixer_ray.filters.judge import says_yes
from genixer_ray.filters.policies import select_band, select_threshold, select_top_fraction
from genixer_ray.filters.rules import Rule, clip_rule, consistency_rule, dedup_rule, judge_rule

FILTERS = ("clip", "consistency", "judge", "dedup")  # funnel order
# Every step a funnel may have, in order ("distinct": rows whose image is not a near-duplicate of another).
FUNNEL_ORDER = ("rows", "distinct", "generated", "parsed", *FILTERS, "kept")


def funnel_steps(cfg: FiltersConfig, *, image_dedup: bool = False) -> list[str]:
    """The funnel's steps in order: rows, distinct images (with ``image_dedup``), generated, parsed, each enabled filter, kept."""
    return ["rows", *(["distinct"] if image_dedup else []), "generated", "parsed", *(f for f in FILTERS if getattr(cfg, f).enabled), "kept"]


def _task(row: dict) -> str:
    return row.get("parsed_task") or row.get("task") or "unknown"


SCORE_COLUMNS = {"clip": "clip_score", "consistency": "consistency_score", "judge": "judge_p_yes"}


def _scored(row: dict, name: str) -> bool:
    return row["status"] == "ok" and (row.get(SCORE_COLUMNS[name]) is not None or row.get(f"{name}_reason") is not None)


def decide(rows: list[dict], cfg: FiltersConfig) -> list[dict]:
    """Return the rows with ``*_pass``, the rules used, ``keep`` and ``reject_reasons`` set.

    ``rows`` are one shard's rows (error rows included); none is dropped or reordered.
    """
    out = [dict(r) for r in rows]
    if cfg.clip.enabled:
        for r in out:
            if not _scored(r, "clip"):
                continue
            r["clip_threshold"] = t = cfg.clip.threshold_for(_task(r))
            r["clip_rule"] = clip_rule(cfg.clip, t).text  # which score the threshold was applied to
            if r.get("clip_reason") is None and r[cfg.clip.score_column] < t:
                r["clip_reason"] = "clip_below_threshold"
            r["clip_pass"] = r["clip_reason"] is None
    if cfg.consistency.enabled:
        for r in out:
            if not _scored(r, "consistency"):
                continue
            r["consistency_threshold"] = t = cfg.consistency.threshold
            if r.get("consistency_reason") is None and r["consistency_score"] < t:
                r["consistency_reason"] = "inconsistent"
            r["consistency_pass"] = r["consistency_reason"] is None
    if cfg.judge.enabled:
        _decide_judge(out, cfg)
    if cfg.dedup.enabled:  # last: the best of a cluster is, first, one the other filters kept
        decide_dedup(out, cfg.dedup)
    for r in out:
        if r["status"] != "ok":
            r["keep"], r["reject_reasons"] = False, [r.get("error_code") or "error"]
            continue
        reasons = [r[f"{f}_reason"] for f in FILTERS if r.get(f"{f}_pass") is False]
        if r.get("contamination_tier") is not None:  # an evaluation image or question, found after generation
            reasons.append("contaminated")
        r["keep"], r["reject_reasons"] = not reasons, reasons
    return out


def _decide_judge(rows: list[dict], cfg: FiltersConfig) -> None:
    j = cfg.judge
    scored = [r for r in rows if _scored(r, "judge")]
    if j.score == "paper":  # the paper kept pairs its judge said Yes to
        for r in scored:
            if r.get("judge_reason") is None and not says_yes(r.get("judge_paper_reply") or ""):
                r["judge_reason"] = "judge_said_no"
    scores = [r[j.score_column] if r.get("judge_reason") is None else None for r in scored]
    if j.policy == "threshold":
        passed, reason = select_threshold(scores, j.threshold), "judge_below_threshold"
    elif j.policy == "band":
        passed, reason = select_band(scores, *j.band), "judge_outside_band"
    else:
        passed, reason = select_top_fraction(scores, [_task(r) for r in scored], j.fraction), "judge_not_top_fraction"
    for r, ok in zip(scored, passed):
        r["judge_rule"] = judge_rule(j).text
        if r.get("judge_reason") is None and not ok:
            r["judge_reason"] = reason
        r["judge_pass"] = r["judge_reason"] is None


def funnel(rows: list[dict], cfg: FiltersConfig, *, image_dedup: bool = False) -> dict[str, dict[str, int]]:
    """Rows per task at each step: all rows, distinct images (with ``image_dedup``), generated,
    parsed, after each enabled filter, kept.

    Every task seen in ``rows`` has every step of :func:`funnel_steps`, zeros included, so a step
    that rejected everything still shows. The filter steps are cumulative in the order CLIP,
    self-consistency, judge: a row counts at a step when it parsed and no filter up to that step
    rejected it.
    """
    steps = funnel_steps(cfg, image_dedup=image_dedup)
    filters = steps[steps.index("parsed") + 1 : -1]
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        c = out.setdefault(_task(r), dict.fromkeys(steps, 0))
        c["rows"] += 1
        if image_dedup and r.get("error_code") != "duplicate_image":
            c["distinct"] += 1
        if r.get("text") is not None and r.get("error_stage") != "generate":  # the engine gave text
            c["generated"] += 1
        if r["status"] != "ok":
            continue
        c["parsed"] += 1
        for f in filters:
            if r.get(f"{f}_pass") is False:
                break
            c[f] += 1
        if r.get("keep", True):
            c["kept"] += 1
    return dict(sorted(out.items()))


def decide_shard(rows: list[dict], cfg: FiltersConfig, *, image_dedup: bool = False) -> tuple[list[dict], dict]:
    """The commit step of a shard: its rows with their keep decisions, and the counts they add.

    Runs once a shard's rows are all in (the judge's top fraction ranks rows within a shard);
    returns the rows and ``{"kept", "funnel", "rules"}`` for the shard's commit marker (``rules``:
    the fields of each rule the shard's rows were judged by, :func:`configured_rules`), and the
    rating judge's health ``alarms`` when it raised any (:func:`~genixer_ray.filters.health.collapse_alarms`).
    """
    rows = decide(rows, cfg)
    counts = {"kept": sum(bool(r.get("keep")) for r in rows), "funnel": funnel(rows, cfg, image_dedup=image_dedup)}
    if rules := configured_rules(cfg):
        counts["rules"] = [rule.as_dict() for rule in rules]
    if cfg.rating.enabled and (alarms := collapse_alarms(rows, cfg.rating)):
        counts["alarms"] = alarms
    return rows, counts


def configured_rules(cfg: FiltersConfig) -> list[Rule]:
    """The rules of the enabled filters: CLIP's default and per-task thresholds, self-consistency's, the judge's, dedup's."""
    rules: list[Rule] = []
    if cfg.clip.enabled:
        rules += [clip_rule(cfg.clip, t) for t in sorted({cfg.clip.threshold, *cfg.clip.task_thresholds.values()})]
    if cfg.consistency.enabled:
        rules.append(consistency_rule(cfg.consistency))
    if cfg.judge.enabled:
        rules.append(judge_rule(cfg.judge))
    if cfg.dedup.enabled:
        rules.append(dedup_rule(cfg.dedup))
    return rules
