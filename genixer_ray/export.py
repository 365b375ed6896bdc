"""Export a run's rows as LLaVA conversation JSON, the format LLaVA-style trainers read.

One record per kept row (or per parsed row with ``only_kept=False``)::

    {"id": "<image id>", "image": "<path>", "task": "rec",
     "conversations": [{"from": "human", "value": "<image>\\nWhere is the dog?"},
                       {"from": "gpt", "value": "[0.120,0.300,0.450,0.800]"}],
     "genixer": {"run_id": ..., "generator_hash": ..., "seed": ..., "clip_score": ..., ...}}

Boxes stay in the text, normalized to [0, 1] (Shikra's convention, which the generator was
trained on). Dialogues become several turns. The ``genixer`` key keeps each record's provenance
and filter scores; trainers ignore keys they do not know. Shards are read one at a time and the
JSON array is written as a stream, so memory stays bounded by one shard.
"""

from __future__ import annotations

import json
from collections import Counter

from genixer_ray.store import RunStore

PROVENANCE = ("run_id", "generator_hash", "seed", "clip_score", "consistency_score", "judge_p_yes")


def llava_record(row: dict, image: str) -> dict:
    """The LLaVA conversation record of one parsed row."""
    turns = row.get("turns") or [{"question": row["question"], "answer": row["answer"]}]
    conversations = []
    for i, t in enumerate(turns):
        question = f"<image>\n{t['question']}" if i == 0 else t["question"]
        conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": t["answer"]}]
    return {
        "id": row["image_id"],
        "image": image,
        "task": row.get("parsed_task"),
        "conversations": conversations,
        "genixer": {k: row.get(k) for k in PROVENANCE},
    }


def _image_name(source: str, image_root: str | None) -> str:
    if image_root:
        root = image_root.rstrip("/") + "/"
        if source.startswith(root):
            return source[len(root) :]
    return source


def export_llava(
    run: str, out: str, *, storage_options: dict | None = None, image_root: str | None = None, only_kept: bool = True
) -> dict:
    """Write the run's rows as one LLaVA JSON file at ``out`` (any fsspec URL); return counts.

    Args:
        run: a run folder (``{output.path}/{name}``) or a filter pass's (``.../filtered/{name}``);
            only committed shards are read.
        out: the JSON file to write.
        storage_options: fsspec options for ``run`` and ``out``.
        image_root: image paths under this prefix are written relative to it (trainers join them
            with their own image folder); others are written as they are.
        only_kept: export rows with ``keep`` (the filters' decision); ``False``: every parsed row.
    """
    import fsspec

    store = RunStore(run, storage_options)
    shards = sorted(store.committed())
    if not shards:
        raise ValueError(f"no committed shards under {run}")
    n = 0
    by_task: Counter = Counter()
    with fsspec.open(out, "w", **(storage_options or {})) as f:
        f.write("[")
        for k in shards:
            for row in store.read_frame(store.shard_name(k)).to_dicts():
                if row["status"] != "ok" or (only_kept and not row.get("keep")):
                    continue
                f.write(",\n" if n else "\n")
                f.write(json.dumps(llava_record(row, _image_name(row["source"], image_root))))
                n += 1
                by_task[row.get("parsed_task") or "unknown"] += 1
        f.write("\n]\n")
    return {"records": n, "shards": len(shards), "by_task": dict(by_task), "output": out}
