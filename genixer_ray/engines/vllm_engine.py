"""The vLLM backend: vLLM's ``AsyncLLM`` kept full by every thread's requests at once.

``generate`` is synchronous for its caller but runs each request as its own coroutine on one
event loop shared by all callers: while one batch waits for its slowest row, the rows of other
batches (other Ray Data calls on the same actor) are already running, so the engine's continuous
batching keeps up to ``max_num_seqs`` sequences busy instead of draining at every batch boundary.
How full it really was is read from vLLM's own per-step statistics (a stat logger).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence

from vllm.v1.metrics.loggers import StatLoggerBase

from genixer_ray.config import EngineConfig, SamplingConfig
from genixer_ray.engines.base import (
    EngineError,
    GenerationRequest,
    GenerationResult,
    Generator,
    chat_prompt,
)

# vLLM refuses a request asking for more alternatives than the engine was started with.
MAX_LOGPROBS = 20


class EngineLoad:
    """The time integral of the sequences the engine reports running, step by step.

    The mean over any interval (one request's life, a benchmark's steady state) is the
    difference of two :meth:`mark` readings divided by the time between them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._t = time.monotonic()
        self._running = 0
        self._area = 0.0

    def record(self, running: int) -> None:
        """The engine now runs ``running`` sequences (called after each engine step)."""
        with self._lock:
            now = time.monotonic()
            self._area += self._running * (now - self._t)
            self._t, self._running = now, running

    def mark(self) -> tuple[float, float]:
        """``(time, integral of running sequences up to that time)``."""
        with self._lock:
            now = time.monotonic()
            return now, self._area + self._running * (now - self._t)

    @staticmethod
    def mean(start: tuple[float, float], end: tuple[float, float]) -> float:
        """Mean sequences running between two :meth:`mark` readings."""
        dt = end[0] - start[0]
        return (end[1] - start[1]) / dt if dt > 0 else 0.0


class _LoadLogger(StatLoggerBase):
    """A vLLM stat logger feeding each step's running-sequence count to an :class:`EngineLoad`."""

    def __init__(self, load: EngineLoad, vllm_config, engine_index: int = 0):
        self.load = load

    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0) -> None:
        """Take one step's scheduler statistics (vLLM calls this after every engine step)."""
        if scheduler_stats is not None:
            self.load.record(scheduler_stats.num_running_reqs)

    def log_engine_initialized(self) -> None:
        """Nothing to say at start-up."""


class VLLMGenerator(Generator):
    """A vLLM ``AsyncLLM`` in this process (its engine core runs in a spawned subprocess).

    Thread-safe: any number of threads may call :meth:`generate` at once; their requests share
    the engine. Each result carries ``engine_running`` (mean sequences the engine ran during the
    request) and ``cached_tokens`` (prompt tokens served from the prefix cache).
    """

    backend = "vllm"

    def __init__(self, cfg: EngineConfig, model_path: str):
        from transformers import AutoProcessor
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        self.cfg = cfg
        self.model_path = model_path
        cpu = current_platform.is_cpu()
        if cpu:
            # On CPU the KV cache is sized in GiB by this variable, not by memory utilization.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kvcache_space_gib))
        self.processor = AutoProcessor.from_pretrained(model_path)
        self.load = EngineLoad()
        self._ids = itertools.count()
        self._prefix = uuid.uuid4().hex[:8]
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="genixer-vllm-loop", daemon=True).start()
        args = AsyncEngineArgs(
            model=model_path,
            runner="generate",
            dtype=cfg.dtype,
            max_model_len=cfg.max_model_len,
            gpu_memory_utilization=cfg.memory_utilization(cpu=cpu),
            tensor_parallel_size=cfg.tensor_parallel_size,
            max_num_seqs=cfg.max_num_seqs,
            enforce_eager=cfg.enforce_eager,
            limit_mm_per_prompt={"image": 1},
            max_logprobs=MAX_LOGPROBS,
            seed=0,
            # vLLM-CPU 0.32 dies ("CPU Generator does not use offset") when a seeded request's
            # prefill is split over steps, which happens as soon as the prefills waiting exceed
            # one step's token budget (a few dozen rows at once): whole prefills only on CPU.
            enable_chunked_prefill=not cpu,
            block_size=cfg.block_size,
            disable_log_stats=False,  # the stat loggers, ours included, need the engine's statistics
        )

        async def start() -> AsyncLLM:
            # Built inside the loop so that vLLM's output handler runs on it. An offline batch
            # job: vLLM's `LLM` defaults (8,192-16,384 tokens per step on GPUs), not an engine's 2,048.
            return AsyncLLM.from_engine_args(
                args, usage_context=UsageContext.LLM_CLASS, stat_loggers=[functools.partial(_LoadLogger, self.load)]
            )

        self.engine = self._wait(start())

    def _wait(self, coro):
        """Run ``coro`` on the engine's loop and wait for its result from this thread."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Stop the engine-core subprocess and the loop now rather than at interpreter exit."""
        self.engine.shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)
        # AsyncLLM shuts down again when collected; at interpreter exit, with vLLM's modules
        # already torn down, that fails noisily. Collected here, it finds nothing left to do.
        del self.engine

    def format_prompt(self, instruction: str) -> str:
        """The chat-formatted prompt for ``instruction`` (see :func:`chat_prompt`)."""
        return chat_prompt(self.processor, instruction)

    @staticmethod
    def _params(s: SamplingConfig):
        from vllm import SamplingParams

        return SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            max_tokens=s.max_tokens,
            seed=s.seed,
            logprobs=s.logprobs,
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Generate for a batch; a request vLLM rejects becomes an error result, not an exception."""
        params = [self._params(r.sampling) for r in requests]
        return self._run(self._prompts(requests), params, self._result)

    def next_token_logprobs(self, requests: Sequence[GenerationRequest], token_ids: Sequence[int]) -> list[GenerationResult]:
        """One greedy step per request, asking vLLM for exactly ``token_ids``' raw logprobs."""
        from vllm import SamplingParams

        ids = [int(t) for t in token_ids]
        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=ids)

        def scores(out, _k) -> GenerationResult:
            c = out.outputs[0]
            first = (c.logprobs or [{}])[0]
            return GenerationResult(
                text=c.text,
                token_ids=[int(t) for t in c.token_ids],
                top_logprobs=[{t: float(first[t].logprob) for t in ids}],
                finish_reason=c.finish_reason or "stop",
                prompt_tokens=len(out.prompt_token_ids or []),
            )

        return self._run(self._prompts(requests), [params] * len(requests), scores)

    def _prompts(self, requests: Sequence[GenerationRequest]) -> list[dict]:
        from PIL import Image

        return [
            {"prompt": self.format_prompt(r.instruction), "multi_modal_data": {"image": Image.fromarray(r.image)}}
            for r in requests
        ]

    def _run(self, prompts: list[dict], params: list, result: Callable) -> list[GenerationResult]:
        async def every() -> list[GenerationResult]:
            return await asyncio.gather(*(self._one(p, sp, result) for p, sp in zip(prompts, params)))

        return self._wait(every()) if prompts else []

    async def _one(self, prompt: dict, params, result: Callable) -> GenerationResult:
        """One request through the engine; only a failure of this request becomes an error result."""
        from vllm.exceptions import VLLMClientError

        start = self.load.mark()
        final = None
        try:
            async for final in self.engine.generate(prompt, params, f"{self._prefix}-{next(self._ids)}"):
                pass
        except VLLMClientError as e:  # validated per request: a prompt too long, a bad parameter
            too_long = getattr(e, "parameter", None) == "input_tokens" or "maximum model length" in str(e)
            return GenerationResult.failed("prompt_too_long" if too_long else "request_rejected", str(e))
        except Exception as e:  # the engine itself: dead core, out of memory, ...
            raise EngineError(f"vLLM engine failed: {type(e).__name__}: {e}") from e
        if final.outputs[0].finish_reason == "error":  # the engine ended this request itself (seen near max_model_len)
            return GenerationResult.failed("request_rejected", f"the engine ended the request with an error ({len(final.prompt_token_ids or [])} prompt tokens)")
        out = result(final, params.logprobs)
        out.engine_running = EngineLoad.mean(start, self.load.mark())
        out.cached_tokens = final.num_cached_tokens or 0
        return out

    @staticmethod
    def _result(out, k: int) -> GenerationResult:
        c = out.outputs[0]
        positions = c.logprobs or []
        # Each position holds the chosen token plus the k most likely ones (ranks 1..k); the
        # chosen token appears with its own rank even when it is outside the top k.
        return GenerationResult(
            text=c.text,
            token_ids=[int(t) for t in c.token_ids],
            logprobs=[float(pos[t].logprob) for t, pos in zip(c.token_ids, positions)],
            top_logprobs=[{int(t): float(lp.logprob) for t, lp in pos.items() if lp.rank <= k} for pos in positions]
            if k
            else [],
            finish_reason=c.finish_reason or "stop",
            prompt_tokens=len(out.prompt_token_ids or []),
        )
