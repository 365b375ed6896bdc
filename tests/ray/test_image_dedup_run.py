"""Near-duplicate images in a real run on Ray: clustered before generation, each generated once."""

import io
import os
import shutil

import polars as pl
import pytest
from PIL import Image

from genixer_ray.config import load_config
from genixer_ray.image_dedup import MARKER, fingerprints_name
from genixer_ray.images import embedded_image_paths
from genixer_ray.inspection import inspect_run
from genixer_ray.pipeline import run_generation
from genixer_ray.store import RunStore
from genixer_ray.verify import verify_run

pytestmark = pytest.mark.ray


def crawl(folder) -> dict[str, str]:
    """The bundled photos and planted copies of four of them: the id left out -> the id generated."""
    photos = embedded_image_paths()
    folder.mkdir()
    for name, path in photos.items():
        shutil.copy(path, folder / f"{name}{path.suffix}")
    shutil.copy(photos["astronaut"], folder / "zz_astronaut_again.png")  # the same file
    # The same pixels in a larger file (less compressed): the larger file is generated, the same picture.
    Image.open(photos["camera"]).save(folder / "zz_camera.png", compress_level=1)
    small = io.BytesIO()
    rocket = Image.open(photos["rocket"]).convert("RGB")
    rocket.resize((rocket.width // 2, rocket.height // 2)).save(small, "JPEG", quality=70)  # resized, re-encoded
    (folder / "zz_rocket_small.jpg").write_bytes(small.getvalue())
    # Same size, re-encoded (a smaller file), its id before the original's: the original is generated.
    Image.open(photos["chelsea"]).convert("RGB").save(folder / "a_chelsea_copy.jpg", "JPEG", quality=60)
    ext = {n: p.suffix for n, p in photos.items()}
    return {"zz_astronaut_again.png": f"astronaut{ext['astronaut']}", f"camera{ext['camera']}": "zz_camera.png",
            "zz_rocket_small.jpg": f"rocket{ext['rocket']}", "a_chelsea_copy.jpg": f"chelsea{ext['chelsea']}"}


def test_duplicates_are_skipped_one_row_per_sample_never_generated_and_the_clusters_reused(ray_session, tmp_path):
    planted = crawl(tmp_path / "crawl")
    overrides = [
        f"input.source={tmp_path / 'crawl'}", f"output.path={tmp_path / 'out'}", "output.shard_size=4", "samples_per_image=2",
        "engines.generator.backend=transformers", "sampling.max_tokens=8", "image_dedup.enabled=true",
    ]
    summary = run_generation(load_config(None, overrides))
    assert sum(summary.by_status.values()) == 24 and summary.by_error["duplicate_image"] == 8  # 12 images x 2 samples
    out = pl.read_parquet(f"{summary.output}/data/*.parquet")
    skipped = out.filter(pl.col("error_code") == "duplicate_image")
    assert dict(zip(skipped["image_id"], skipped["duplicate_of"])) == planted and sorted(skipped["sample"]) == [0] * 4 + [1] * 4
    assert (skipped["status"] == "skipped").all() and skipped["phash"].null_count() == 0  # fingerprints kept
    # Never generated: the engine served no request for them (no prompt tokens, no text).
    assert skipped["prompt_tokens"].null_count() == 8 and skipped["text"].null_count() == 8
    assert out.filter(pl.col("error_code").is_null())["prompt_tokens"].null_count() == 0
    assert verify_run(summary.output).ok
    info = inspect_run(summary.output)
    assert sum(c["rows"] - c["distinct"] for c in info["funnel"].values()) == 8
    manifest = RunStore(summary.output).read_json("manifest.json")
    dedup = manifest["image_dedup"]
    assert (dedup["duplicate_images"], dedup["clusters"], dedup["requests_avoided"]) == (4, 4, 8)
    assert dedup["by_tier"] == {"exact_bytes": 1, "exact_pixels": 1, "perceptual": 2} and dedup["generator_seconds_saved"] > 0

    # Killed mid-clustering and mid-run: a shard's commit, the clustering's marker and one shard's
    # fingerprints lost. The re-run fingerprints that shard alone and finds the same clusters.
    store = RunStore(summary.output)
    kept = {k: os.path.getmtime(store.path(fingerprints_name(k))) for k in (0, 2)}
    for name in (store.marker_name(1), MARKER, fingerprints_name(1)):
        os.remove(store.path(name))
    again = run_generation(load_config(None, overrides))
    assert again.skipped_shards == 2 and again.by_error == summary.by_error
    assert {k: os.path.getmtime(store.path(fingerprints_name(k))) for k in (0, 2)} == kept
    assert store.read_json(MARKER)["duplicates"] == 4 and verify_run(summary.output).ok
