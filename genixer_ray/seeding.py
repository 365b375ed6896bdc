"""Deterministic per-row randomness: everything random about a row derives from (run seed, key)."""

from __future__ import annotations

import hashlib


def derive_seed(base_seed: int, key: str) -> int:
    """A 31-bit seed from the run's seed and a stable key (an image id): same inputs, same seed."""
    digest = hashlib.blake2b(f"{base_seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF


def sample_id(image_id: str, sample: int) -> str:
    """The stable key of an image's ``sample``-th sample: the image id itself for sample 0, else ``{image_id}#{sample}``.

    Seeds, prompt choices and exported record ids derive from it, so a run with one sample per
    image keeps the keys (and outputs) it had before several samples existed.
    """
    return image_id if not sample else f"{image_id}#{sample}"
