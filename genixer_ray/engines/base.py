"""The generator interface shared by the vLLM and transformers backends.

A batch of :class:`GenerationRequest` (image, instruction, sampling parameters) goes in; one
:class:`GenerationResult` per request comes out, in order. A request that fails alone (a prompt
longer than the model allows, a request the engine rejects) becomes a result with an error code;
a failure of the engine itself raises.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from genixer_ray.config import EngineConfig, SamplingConfig
from genixer_ray.errors import RunFailed


@dataclass(frozen=True)
class GenerationRequest:
    """One image and the instruction the generator answers about it."""

    image: np.ndarray  # (H, W, 3) uint8, RGB
    instruction: str
    sampling: SamplingConfig


@dataclass
class GenerationResult:
    """What the engine produced for one request.

    ``logprobs`` holds the chosen token's log-probability at each generated position, from the
    model's raw distribution (before temperature or top-p), as vLLM reports it by default.
    ``top_logprobs`` holds, per position, the ``sampling.logprobs`` most likely token ids with
    their log-probabilities (empty lists when 0 were asked for).
    """

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] = field(default_factory=list)
    finish_reason: str = "stop"  # "stop", "length", or "error"
    error_code: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    # How full the engine was: mean sequences it ran while this request ran (vLLM: from its own
    # per-step statistics; transformers: the rows of the one ``generate`` call).
    engine_running: float | None = None
    cached_tokens: int | None = None  # prompt tokens served from vLLM's prefix cache

    @classmethod
    def failed(cls, code: str, message: str) -> GenerationResult:
        """A result that stands for a request the engine could not serve."""
        return cls(text="", finish_reason="error", error_code=code, error=message)


class EngineError(RunFailed):
    """The engine itself failed (not one request): the caller should stop or restart it."""


class Generator(abc.ABC):
    """A loaded multimodal generator. Build once per process with :func:`get_generator`."""

    backend: str
    model_path: str
    processor: object  # the model's HF processor; ``processor.tokenizer`` maps text and ids

    @functools.cached_property
    def model_hash(self) -> str:
        """The checkpoint's fingerprint (:func:`checkpoint_hash`), computed once per engine: the
        generate, judge and rating stages sharing an actor's engine read its files once."""
        return checkpoint_hash(self.model_path)

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Generate for a batch; one result per request, in order."""

    @abc.abstractmethod
    def next_token_logprobs(self, requests: Sequence[GenerationRequest], token_ids: Sequence[int]) -> list[GenerationResult]:
        """Score ``token_ids`` as the first token of each request's answer, in one decode step.

        Each result's ``top_logprobs`` is ``[{token_id: logprob}]`` for exactly ``token_ids``, from
        the model's raw distribution (no temperature): deterministic, nothing is sampled. Requests
        that cannot be served become error results, as in :meth:`generate`.
        """

    @abc.abstractmethod
    def format_prompt(self, instruction: str) -> str:
        """The full prompt text (chat template applied, image placeholder included)."""

    def close(self) -> None:
        """Release the engine's processes and memory (a no-op where nothing outlives the object)."""


def chat_prompt(processor, instruction: str) -> str:
    """Apply the model's own chat template to one user turn holding the image and ``instruction``.

    Both backends format prompts through this function so that they feed the model identical text.
    """
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def prompt_too_long(prompt_tokens: int, max_model_len: int) -> str | None:
    """The error message for a prompt that leaves no room to generate, else ``None``."""
    if prompt_tokens >= max_model_len:
        return f"prompt has {prompt_tokens} tokens (image included); the model allows {max_model_len} in all"
    return None


def checkpoint_hash(model_path: str, *, head_bytes: int = 1 << 20) -> str:
    """A short fingerprint of a model directory, recorded on every row as provenance.

    Hashes each file's relative name, size and first ``head_bytes`` (reading whole multi-GB
    weights per actor start would be slow); a hub id that is not a local directory is hashed
    by name.
    """
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    root = Path(model_path)
    if not root.is_dir():
        h.update(f"hub:{model_path}".encode())
        return h.hexdigest()[:16]
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(root).as_posix()}:{p.stat().st_size}:".encode())
        with open(p, "rb") as f:
            h.update(f.read(head_bytes))
    return h.hexdigest()[:16]


_ENGINES: dict[tuple, Generator] = {}


def get_generator(cfg: EngineConfig) -> Generator:
    """Return this process's generator for ``cfg``, building it on first use.

    Engines are expensive (vLLM: tens of seconds to start), so one per configuration and process
    is kept and reused by every later call with an equal configuration.
    """
    from genixer_ray.models import resolve_model

    key = (cfg.model_dump_json(),)
    if key not in _ENGINES:
        path = resolve_model(cfg.model)
        if cfg.backend == "vllm":
            from genixer_ray.engines.vllm_engine import VLLMGenerator

            _ENGINES[key] = VLLMGenerator(cfg, path)
        else:
            from genixer_ray.engines.hf_engine import TransformersGenerator

            _ENGINES[key] = TransformersGenerator(cfg, path)
    return _ENGINES[key]


def shutdown_generators() -> None:
    """Close every generator this process built (their engine subprocesses end cleanly)."""
    while _ENGINES:
        _, gen = _ENGINES.popitem()
        gen.close()
