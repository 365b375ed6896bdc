"""Input manifests of any length over the bundled photos, for runs that need more rows than eight."""

import json

from genixer_ray.images import embedded_image_paths


def write_manifest(path, n: int) -> str:
    """A JSONL manifest of ``n`` rows over the bundled photos (ids ``img000``...); returns its path."""
    photos = list(embedded_image_paths().values())
    path.write_text("\n".join(json.dumps({"image_id": f"img{i:03d}", "path": str(photos[i % len(photos)])}) for i in range(n)))
    return str(path)
