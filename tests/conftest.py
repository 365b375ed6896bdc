"""Shared fixtures: the tiny models are built once per test session into a private home."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

# Before anything resolves the `tiny` model spec: build it in a private place, not ~/.cache.
os.environ.setdefault("GENIXER_RAY_HOME", tempfile.mkdtemp(prefix="genixer-ray-test-home-"))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def tiny_models():
    """Paths of the tiny generator and CLIP (built on first use, like `model: tiny` does)."""
    from genixer_ray.tiny_models import ensure_tiny_models

    return ensure_tiny_models()


@pytest.fixture(scope="session")
def embedded_images() -> dict[str, np.ndarray]:
    """The bundled sample photos, decoded."""
    from genixer_ray.images import decode_image, embedded_image_paths

    return {k: decode_image(p.read_bytes(), max_side=448) for k, p in embedded_image_paths().items()}


@pytest.fixture(scope="session", autouse=True)
def _close_engines():
    """Stop engine subprocesses while pytest still owns its output streams."""
    yield
    from genixer_ray.engines.base import shutdown_generators

    shutdown_generators()
