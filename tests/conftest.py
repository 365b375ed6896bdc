"""Shared fixtures: the tiny models are built once per test session into a private home."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

# Before anything resolves the `tiny` model spec: build it in a private place, not ~/.cache.
os.environ.setdefault("GENIXER_RAY_HOME", tempfile.mkdtemp(prefix="genixer-ray-test-home-"))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# Nothing reaches the Hugging Face Hub: datasets and huggingface_hub read local folders only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_models():
    """Paths of the tiny generator and CLIP (built on first use, like `model: tiny` does)."""
    from genixer_ray.tiny_models import ensure_tiny_models

    return ensure_tiny_models()


@pytest.fixture(scope="session")
def make_requests():
    """Build generation requests for images, one seed per row (``seed_base + i``)."""
    from genixer_ray.config import SamplingConfig
    from genixer_ray.engines.base import GenerationRequest

    def build(images, *, seed_base=0, **sampling):
        return [
            GenerationRequest(img, "Write a question and its answer.", SamplingConfig(seed=seed_base + i, **sampling))
            for i, img in enumerate(images)
        ]

    return build


@pytest.fixture(scope="session")
def embedded_images() -> dict[str, np.ndarray]:
    """The bundled sample photos, decoded."""
    from genixer_ray.images import decode_image, embedded_image_paths

    return {k: decode_image(p.read_bytes(), max_side=448) for k, p in embedded_image_paths().items()}


@pytest.fixture(scope="session")
def make_row():
    """Build a parsed ``ok`` row holding its image, as the generator actors hand it to the filters."""

    def build(image: np.ndarray, image_id: str, **fields) -> dict:
        row = {
            "shard": 0, "image_id": image_id, "source": f"embedded:{image_id}", "status": "ok", "text": "generated",
            "task": fields.get("parsed_task"), "question": "What is shown?", "answer": "a photo", "seed": 7,
            "pixels": image.tobytes(), "height": image.shape[0], "width": image.shape[1],
        }
        return row | fields

    return build


@pytest.fixture(scope="session")
def reference_p_yes():
    """P(Yes) from one plain forward pass of a transformers generator's model (no engine code)."""

    def compute(generator, image: np.ndarray, instruction: str) -> float:
        import torch
        from PIL import Image

        from genixer_ray.filters.judge import yes_no_token_ids

        proc, model = generator.processor, generator.model
        inputs = proc(images=[Image.fromarray(image)], text=[generator.format_prompt(instruction)], return_tensors="pt")
        with torch.no_grad():
            logp = torch.log_softmax(model(**inputs).logits[0, -1].float(), dim=-1)
        yes, no = yes_no_token_ids(proc.tokenizer)
        py, pn = logp[yes].exp().sum().item(), logp[no].exp().sum().item()
        return py / (py + pn)

    return compute


@pytest.fixture(scope="session", autouse=True)
def _close_engines():
    """Stop engine subprocesses while pytest still owns its output streams."""
    yield
    from genixer_ray.engines.base import shutdown_generators

    shutdown_generators()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test run (starting one costs about 10 s on 2 cores).

    Logical CPUs exceed the two real ones so a decode stage and a generator actor schedule together.
    """
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3():
    """A real S3 HTTP endpoint on loopback (moto's server) with a bucket; yields fsspec options."""
    import boto3
    from s3_endpoint import moto_server

    with moto_server() as endpoint:
        creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
        boto3.client("s3", endpoint_url=endpoint, **creds).create_bucket(Bucket="genixer-test")
        options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
        yield {"bucket": "genixer-test", "endpoint": endpoint, "storage_options": options}
