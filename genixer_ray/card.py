"""The dataset card of a published run: ``README.md`` with the Hub's YAML header, written from the run.

The header is built with ``huggingface_hub``'s :class:`~huggingface_hub.DatasetCardData` (license,
language, task categories, size category, tags) plus the ``configs:`` that ``datasets`` reads
(one per task, ``default`` for all: the ``data_files`` form of its ``MetadataConfigs``). The body
says what a reader needs to trust the data: the method in two lines, how to load it, the columns,
the generator and judge checkpoints with their digests, the funnel per task with each rule, the
contamination check and deduplication as the run did them (or that it did not), the diversity
figures, and the command and (credential-masked) config that made it. Nothing in it is the
current time, so publishing the same run again writes the same card. No generated text is
copied into it: the rows are data, the card is the project's words and figures.
"""

from __future__ import annotations

import hashlib

import yaml

from genixer_ray.config import PublishConfig, redact
from genixer_ray.filters.decide import FILTERS, FUNNEL_ORDER
from genixer_ray.filters.rules import Rule
from genixer_ray.inspection import inspect_run
from genixer_ray.store import RunStore, source_run

GENIXER_CITATION = """@inproceedings{zhao2024genixer,
  title     = {Genixer: Empowering Multimodal Large Language Models as a Powerful Data Generator},
  author    = {Zhao, Henry Hengyuan and Zhou, Pan and Shou, Mike Zheng},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2024}
}"""

# The Hub's size categories (huggingface_hub.DatasetCardData's documented options), by upper bound.
_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"),
          (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]

COLUMN_DOCS = {
    "id": "the sample's id, `{image_id}#{sample}`",
    "image": "the image (embedded bytes; `datasets` decodes it)",
    "task": "the task the sample was parsed as (one of the nine Genixer tasks)",
    "question, answer": "the generated pair; boxes are written in the text as `[x1,y1,x2,y2]` normalized to [0, 1]",
    "conversations": "the pair in LLaVA's `conversations` shape (`<image>` in the first human turn)",
    "options, answer_letter": "a multi-choice question's options and the answer's letter",
    "question_boxes, answer_boxes, points": "boxes and points of the text, normalized to the image's width and height",
    "*_px": "the same in whole pixels of the stored image (`image_width` x `image_height`)",
    "clip_score, consistency_score, judge_p_yes, ...": "the filters' scores (null where a filter did not run); `keep`, `reject_reasons`",
    "run_id, generator, generator_hash, judge_model, judge_hash, seed, ...": "provenance: which run, checkpoints and sampling made the row",
    "image_sha256, pixels_xxh3, phash, phash_center": "the image's fingerprints (exact and perceptual), for deduplication downstream",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genixer-ray")
    except PackageNotFoundError:
        return "(source tree)"


def size_category(n: int) -> str:
    """The Hub's size category of ``n`` rows."""
    return next((name for bound, name in _SIZES if n < bound), "n>1B")


def _fence(text: str) -> str:
    """A Markdown code fence longer than any run of backticks in ``text``."""
    longest, run = 0, 0
    for c in text:
        run = run + 1 if c == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def _block(text: str, lang: str = "") -> str:
    fence = _fence(text)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def card_data(cfg: PublishConfig, name: str, by_task: dict[str, int]):
    """The card's YAML header as ``huggingface_hub``'s :class:`~huggingface_hub.DatasetCardData`."""
    from huggingface_hub import DatasetCardData

    extra = {"license_name": cfg.license_name} if cfg.license_name else {}
    if "datasets" in cfg.layouts:
        default = {"config_name": "default", "default": True, "data_files": [{"split": "train", "path": "data/*/*.parquet"}]}
        extra["configs"] = [default] + [
            {"config_name": t, "data_files": [{"split": "train", "path": f"data/{t}/*.parquet"}]} for t in sorted(by_task)
        ]
    return DatasetCardData(
        license=cfg.license, language=cfg.language, pretty_name=cfg.pretty_name or name, size_categories=[size_category(sum(by_task.values()))],
        task_categories=["visual-question-answering", "image-text-to-text"], annotations_creators=["machine-generated"],
        language_creators=["machine-generated"], source_datasets=["original"], tags=["genixer", "genixer-ray", "synthetic", "visual-instruction-tuning"],
        **extra,
    )


def _funnel(info: dict) -> list[str]:
    present = [s for s in FUNNEL_ORDER if any(s in c for c in info["funnel"].values())]
    lines = ["| task | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
    for task, c in sorted(info["funnel"].items()):
        lines.append(f"| {task} | " + " | ".join(str(c.get(s, "")) for s in present) + " |")
    rules = [Rule(**r) for r in info["rules"]]
    lines.append("")
    lines.append("Rules: " + ("; ".join(f"{r.filter} `{r.text}` on `{r.score}`" for r in rules) if rules else "no filter ran."))
    return lines


def _decontamination(settings: dict | None, info: dict) -> list[str]:
    if not settings or not settings.get("enabled"):
        return ["Not checked: the run named no evaluation sets (`decontamination.sources`). Before evaluating a model trained on "
                "this data, check that it holds no test image of your benchmarks."]
    names = ", ".join(sorted({f"{s['benchmark']} ({s['format']})" for s in settings.get("sources", [])})) or "none"
    found = ", ".join(f"{k}: {v}" for k, v in sorted(info["contamination"].items())) or "no image matched"
    tiers = [f"perceptual hashes within {settings.get('radius')} bits"]
    tiers += ["the same of the evaluation images flipped"] if settings.get("mirrored") else []
    tiers += [f"CLIP image embeddings ({settings['embedding_model']}) at a cosine of {settings.get('embedding_threshold')} or more"
              ] if settings.get("embedding_model") else []
    return [f"Every image was matched against {names} (exact bytes, exact pixels, {', '.join(tiers)}) before generation, and the "
            f"generated questions against their questions. Rows left out (benchmark/tier: rows): {found}."]


def _dedup(info: dict) -> str:
    """What the run's image dedup and sample dedup did (from the manifest, the rule and the funnel), or that none ran."""
    saved = info.get("image_dedup")
    images = (f"Near-duplicate images (the same file, the same pixels, or perceptual hashes close) were generated on once: "
              f"{saved['duplicate_images']} image(s) left out as `duplicate_image` (`duplicate_of` names the image generated instead)."
              if saved else "Near-duplicate images are generated on as often as they occur.")
    rule = next((Rule(**r) for r in info["rules"] if r["filter"] == "dedup"), None)
    if rule is None:
        return f"{images} Near-duplicate samples are kept as generated."
    removed = 0
    for steps in info["funnel"].values():
        if "dedup" in steps:  # the funnel is cumulative: dedup removed what reached the step before it
            before = [s for s in ("parsed", *FILTERS[: FILTERS.index("dedup")]) if s in steps][-1]
            removed += steps[before] - steps["dedup"]
    return (f"{images} Near-duplicate samples of one image (questions whose character 3-grams overlap by {rule.low:g} or more, answers "
            f"agreeing): the best by `{rule.score}` of each cluster kept, {removed} sample(s) rejected as `duplicate_sample` "
            "(`duplicate_of` names the one kept).")


def _diversity(diversity: dict) -> list[str]:
    if not diversity:
        return ["Not measured for this run."]
    lines = ["| task | samples | unique questions | distinct-1 | distinct-2 | share of the 20 largest question clusters | opening entropy (bits) |",
             "|---|---|---|---|---|---|---|"]
    for t, d in sorted(diversity.items()):
        lines.append(f"| {t} | {d['samples']} | {d['unique_questions']} | {d['distinct_1']} | {d['distinct_2']} | "
                     f"{d['top20_cluster_share']:.0%} | {d['opening_entropy_bits']} |")
    return lines


def _models(models: dict[str, list]) -> list[str]:
    lines = []
    for role, key in (("Generator", "generators"), ("Judge", "judges")):
        for model, digest in models.get(key, []):
            shown = f"checkpoint digest `{digest}` (sha256 of each file's name, size and first MiB)" if digest else "digest not recorded"
            lines.append(f"- {role}: `{redact(model)}`, {shown}")
    return lines or ["- No model is recorded on the published rows."]


def _loading(cfg: PublishConfig, by_task: dict[str, int], parts: int) -> str:
    """One line each for datasets, Polars and WebDataset (PATH: the folder or the Hub repository)."""
    lines = []
    if "datasets" in cfg.layouts:
        lines += ["from datasets import load_dataset", 'ds = load_dataset("PATH", split="train")  # every task']
        lines += [f'one_task = load_dataset("PATH", "{t}", split="train")  # a config per task' for t in sorted(by_task)[:1]]
        lines += ["", "import polars as pl", 'df = pl.read_parquet("PATH/data/*/*.parquet")']
    if "webdataset" in cfg.layouts:
        tars = "train-00000.tar" if parts <= 1 else f"train-{{00000..{parts - 1:05d}}}.tar"
        lines += ["", "import webdataset as wds", f'samples = wds.WebDataset("PATH/webdataset/{tars}").decode("pil")  # {{key}}.jpg/.png + {{key}}.json']
    return "\n".join(lines).strip()


def card_text(
    store: RunStore, cfg: PublishConfig, *, by_task: dict[str, int], models: dict[str, list], options: dict, command: str, parts: int,
    left_out: int = 0,
) -> str:
    """The card's Markdown, YAML header included (see the module doc)."""
    info = inspect_run(store.url, storage_options=store.storage_options)
    config = RunStore(source_run(store.url), store.storage_options).config() or {}  # a pass's: its run's
    settings = store.read_json("filter.json")
    name = info["name"]
    rows = sum(by_task.values())
    view = options["view"]
    what = {"kept": "kept", "parsed": "parsed"}.get(view["name"], f"selected (view {view['name']}: `{view['condition']}`)")
    lines = [f"# {cfg.pretty_name or name}", ""]
    lines += [
        f"{rows} visual instruction-tuning samples (an image, a question, an answer), generated by "
        f"genixer-ray {_version()} following the Genixer method (Zhao et al., ECCV 2024): a multimodal LLM fine-tuned to "
        "write image question-answer pairs for nine task types generates them for unlabeled images, and filters (CLIP on the "
        "regions a sample names, a judge model's P(Yes), the generator's self-consistency) decide which are kept.",
        "",
    ]
    if not rows:
        lines += [f"**This dataset has no rows**: none of the run's samples was {what} (see the funnel below). Streamed "
                  '(`load_dataset(PATH, split="train", streaming=True)`) it is empty with every column typed; `datasets` builds '
                  "no split of zero rows otherwise.", ""]
    lines += ["## Load it", "", _block(_loading(cfg, by_task, parts), "python"), ""]
    lines += ["Upload the folder with the Hub's own command: `hf upload --repo-type dataset USER/NAME PATH .`", ""]
    lines += ["## Contents", "", "| config | rows |", "|---|---|", f"| default (all) | {rows} |"]
    lines += [f"| {t} | {n} |" for t, n in sorted(by_task.items())]
    lines += ["", f"One row per {what} sample; the split is `train`. Columns:", ""]
    lines += [f"- `{k}`: {v}" for k, v in COLUMN_DOCS.items()]
    lines += ["", "## How it was made", "", *_models(models)]
    sampling = config.get("sampling") or {}
    if config.get("mode"):
        lines.append(f"- Mode: {config['mode']}; {config.get('samples_per_image', 1)} sample(s) per image; sampling: "
                     + ", ".join(f"{k}={sampling[k]}" for k in ("temperature", "top_p", "max_tokens", "seed") if k in sampling))
    lines += ["", "### Filtering funnel per task", "", *_funnel(info)]
    decontam = (settings or {}).get("decontamination") or config.get("decontamination")  # the pass's check, else its run's
    lines += ["", "### Benchmark decontamination", "", *_decontamination(decontam, info)]
    lines += ["", "### Deduplication", "", _dedup(info)]
    if cap := options.get("cluster_cap"):
        lines += ["", f"At most {cap['cap']} sample(s) per near-duplicate question cluster of a task (normalized questions whose "
                  f"character 3-grams overlap by 0.7 or more, joined through one another), the highest `{cap['score']}` first: "
                  f"{left_out} sample(s) of the view left out."]
    lines += ["", "### Diversity of the questions", "", *_diversity(info["diversity"])]
    recorded = {"run": redact(config)} | ({"filter_pass": redact(settings)} if settings is not None else {})
    lines += ["", "### Command and configuration", "", _block(redact(command) or "genixer-ray publish RUN OUT", "sh"), "",
              _block(yaml.safe_dump(recorded, sort_keys=True, allow_unicode=True), "yaml")]
    lines += ["", "## License", "", f"{cfg.license}" + (f" ({cfg.license_name})" if cfg.license_name else "")
              + ". The images keep their own licenses; the generated text was written by the models named above, under their terms."]
    lines += ["", "## Citation", ""]
    if cfg.citation:
        lines += [_block(cfg.citation, "bibtex"), "", "The method:", ""]
    lines += [_block(GENIXER_CITATION, "bibtex"), ""]
    return f"---\n{card_data(cfg, name, by_task).to_yaml()}\n---\n\n" + "\n".join(lines)


def write_card(store: RunStore, out: RunStore, cfg: PublishConfig, **what) -> str:
    """Write ``README.md`` into ``out`` (see :func:`card_text`); return its sha256."""
    text = card_text(store, cfg, **what).encode()
    out.write_bytes("README.md", text)
    return hashlib.sha256(text).hexdigest()
