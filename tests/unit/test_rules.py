"""Filter rules as data: what decide records in a shard's marker, and the text each row carries."""

from genixer_ray.config import FiltersConfig
from genixer_ray.filters.decide import decide_shard
from genixer_ray.filters.rules import Rule
from genixer_ray.summary import RunSummary


def test_a_shards_marker_records_each_configured_rule_as_fields():
    cfg = FiltersConfig.model_validate({
        "clip": {"enabled": True, "threshold": 0.2, "task_thresholds": {"rec": 0.25}},
        "consistency": {"enabled": True, "threshold": 0.5},
        "judge": {"enabled": True, "policy": "band", "band": [0.5, 0.7], "score": "paper"},
    })
    rows = [{"shard": 0, "image_id": "a", "sample": 0, "status": "ok", "parsed_task": "rec", "clip_score": 0.3, "clip_reason": None,
             "judge_p_yes": 0.9, "judge_paper_score": 0.6, "judge_paper_reply": "Yes", "judge_reason": None}]
    out, counts = decide_shard(rows, cfg)
    rules = [Rule(**r) for r in counts["rules"]]
    assert [(r.filter, r.score, r.policy, r.low, r.high) for r in rules] == [
        ("clip", "clip_score", "threshold", 0.2, None), ("clip", "clip_score", "threshold", 0.25, None),
        ("consistency", "consistency_score", "threshold", 0.5, None), ("judge", "judge_paper_score", "band", 0.5, 0.7),
    ]
    assert out[0]["clip_rule"] == "cosine>=0.25" and out[0]["judge_rule"] == "paper band[0.5,0.7]"  # the rows' text: Rule.text
    assert rules[3].marks == [0.5, 0.7] and rules[0].text == "cosine>=0.2"
    # Markers add up into the run's rules, each once.
    summary = RunSummary(output="x")
    for _ in range(2):
        summary.add_marker({"rows": 1, "by_status": {}, "by_error": {}, "by_task": {}, **counts})
    assert summary.counts()["rules"] and len(summary.counts()["rules"]) == 4
    assert "rules" not in decide_shard(rows, FiltersConfig())[1]  # no filter, no rule
