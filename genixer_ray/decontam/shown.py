"""The report's contamination section: the evaluation images a run's contaminated rows matched, read
back from their evaluation sets for people to compare (the index keeps only fingerprints)."""

from __future__ import annotations

from genixer_ray.annotations import SourceStats
from genixer_ray.config.decontamination import EvalSource
from genixer_ray.decontam.evalsets import iter_eval_records
from genixer_ray.decontam.index import Match
from genixer_ray.report_html import text, thumbnail


def recorded_settings(store) -> dict | None:
    """The decontamination settings a pass (``filter.json``) or a run (its config) recorded, or ``None``."""
    settings = (store.read_json("filter.json") or {}).get("decontamination") or (store.config() or {}).get("decontamination")
    return settings if settings and settings.get("enabled") else None


def evaluation_images(sources: list[dict], wanted: set[tuple[str, str]], storage_options: dict) -> dict[tuple[str, str], bytes | str]:
    """The image bytes of each wanted ``(benchmark, item)``, read from the recorded ``sources`` with
    ``storage_options`` (a recorded source's own are masked), or why its set could not be read; an
    item its set no longer holds is left out. Each set is read once, up to its last wanted item."""
    found: dict[tuple[str, str], bytes | str] = {}
    for source in sources:
        bench = source["benchmark"]
        items = {i for b, i in wanted if b == bench and (b, i) not in found}
        if not items:
            continue
        try:
            src = EvalSource.model_validate(source | {"storage_options": storage_options})
            for rec in iter_eval_records(src, SourceStats(bench)):
                if rec.item in items and rec.data is not None:
                    found[(bench, rec.item)] = rec.data
                    items.discard(rec.item)
                    if not items:
                        break
        except Exception as e:  # moved, unreadable, or credentials the report was not given
            found |= {(bench, i): f"{type(e).__name__}: {e}" for i in items}
    return found


def _pair(row: dict, evaluation: dict) -> str:
    # A card: the run's image, and the evaluation image it matched (or the question it repeats).
    key = (row["contamination_benchmark"], row["contamination_item"])
    tier = row["contamination_tier"]
    mine = f"<img src='{row['_thumb']}' alt='run image'>" if "_thumb" in row else f"<div class='noimg'>{text(row.get('_thumb_error'))}</div>"
    if tier.startswith("question"):
        theirs, how = f"<p>{text(row.get('question'))}</p>", f"{tier}: the question repeats the item's"
    else:
        data = evaluation.get(key, "not in the evaluation set now")
        try:
            theirs = f"<img src='{thumbnail(data, {})}' alt='evaluation image'>" if isinstance(data, bytes) else None
        except Exception as e:  # the set's file changed since it was indexed
            data = f"{type(e).__name__}: {e}"
            theirs = None
        theirs = theirs or f"<div class='noimg'>{text(data)}</div>"
        how = Match(tier, row["contamination_distance"], *key, row.get("contamination_cosine")).how()
    return (f"<div class='card'><div class='pair'><figure>{mine}<figcaption>run image <code>{text(row['image_id'])}</code></figcaption>"
            f"</figure><figure>{theirs}<figcaption>{text(key[0])} item <code>{text(key[1])}</code></figcaption></figure></div>"
            f"<div class='meta'>{text(how)}</div></div>")


def contamination_section(store, rows: list[dict], counts: dict, storage_options: dict) -> str:
    """The report's contamination section (HTML): counts by benchmark and tier, and each matched run
    image (``rows``, their thumbnails attached as ``_thumb``) beside the evaluation image it matched."""
    settings = recorded_settings(store)
    if settings is None:
        return "<h2>Contamination</h2><p class='muted'>not checked: no evaluation sets were named (decontamination.sources)</p>"
    names = ", ".join(sorted({s["benchmark"] for s in settings.get("sources", [])}))
    if not rows:
        return f"<h2>Contamination</h2><p>No image or question matched {text(names)}.</p>"
    by_image = [r for r in rows if not r["contamination_tier"].startswith("question")]
    evaluation = evaluation_images(settings.get("sources", []), {(r["contamination_benchmark"], r["contamination_item"]) for r in by_image},
                                   storage_options)
    cards = [_pair(r, evaluation) for r in rows]
    table = "".join(f"<tr><td>{text(k)}</td><td>{v}</td></tr>" for k, v in sorted(counts.items()))
    return (f"<h2>Contamination</h2><p>Matched against {text(names)}; rows by benchmark/tier:</p><table>{table}</table>"
            f"<p class='muted'>Left: the run's image; right: the evaluation image it matched (read back from its set).</p>"
            f"<div class='grid'>{''.join(cards)}</div>")
