"""How a run is published (``genixer-ray publish RUN OUT``): the card's fields and the layouts."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from genixer_ray.config.base import Strict
from genixer_ray.config.filters import SampleScore

# The Hub's license field takes lowercase identifiers (apache-2.0, cc-by-4.0, other, ...):
# https://huggingface.co/docs/hub/repositories-licenses
_LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")


class PublishConfig(Strict):
    """The published dataset's card fields and layouts; in a run or filter pass config, or given to ``publish`` as ``key=value``."""

    license: str | None = Field(
        None,
        description="The dataset's license as the Hub names it (apache-2.0, cc-by-4.0, other, ...); publish refuses to run without it. "
        "It must allow what the images' and the generator's licenses allow.",
    )
    license_name: str | None = Field(None, description="With license=other: the license's name, shown on the card.")
    citation: str | None = Field(None, description="BibTeX (or plain text) to cite the dataset; the Genixer paper is cited beside it.")
    pretty_name: str | None = Field(None, description="The card's title; unset: the run's name.")
    language: list[str] = Field(default_factory=lambda: ["en"], description="ISO 639 codes of the generated text.")
    layouts: list[Literal["datasets", "webdataset"]] = Field(
        default_factory=lambda: ["datasets", "webdataset"],
        min_length=1,
        description="'datasets': Parquet under data/{task}/ for datasets.load_dataset and the Hub's viewer; "
        "'webdataset': tar shards under webdataset/ for streaming trainers.",
    )
    shards_per_file: int = Field(
        8, ge=1, le=100_000,
        description="Committed run shards per published file (each task's Parquet file and each tar): the unit of resume. "
        "With output.shard_size 256 and about 150 KB images, 8 makes files of up to about 300 MB.",
    )
    cluster_cap: int | None = Field(
        None, ge=1,
        description="At most this many rows of the view per near-duplicate question cluster of a task (the clusters of diversity.json), "
        "the highest cluster_score first, then the earliest; the others are left out and the card counts them. Unset: no cap.",
    )
    cluster_score: SampleScore = Field("judge_p_yes", description="What ranks a cluster's rows for cluster_cap (a row without it comes last).")
    webdataset_txt: bool = Field(
        False, description="Also write {key}.txt (the question, a newline, the answer) for trainers that read image-text pairs."
    )

    @field_validator("license")
    @classmethod
    def _license_id(cls, v: str | None) -> str | None:
        if v is not None and not _LICENSE_ID.match(v):
            raise ValueError("use the Hub's lowercase license identifier, such as apache-2.0, cc-by-4.0 or other")
        return v
