"""The vLLM backend: ``vllm.LLM`` with multimodal prompts, per-request sampling and seeds."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from genixer_ray.config import GeneratorConfig, SamplingConfig
from genixer_ray.engines.base import (
    EngineError,
    GenerationRequest,
    GenerationResult,
    Generator,
    chat_prompt,
)

# vLLM refuses a request asking for more alternatives than the engine was started with.
MAX_LOGPROBS = 20


class VLLMGenerator(Generator):
    """A ``vllm.LLM`` engine in this process (its worker runs in a spawned subprocess)."""

    backend = "vllm"

    def __init__(self, cfg: GeneratorConfig, model_path: str):
        from transformers import AutoProcessor
        from vllm import LLM
        from vllm.platforms import current_platform

        self.cfg = cfg
        self.model_path = model_path
        if current_platform.is_cpu():
            # On CPU the KV cache is sized in GiB by this variable, not by memory utilization.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kvcache_space_gib))
        self.processor = AutoProcessor.from_pretrained(model_path)
        self.llm = LLM(
            model=model_path,
            runner="generate",
            dtype=cfg.dtype,
            max_model_len=cfg.max_model_len,
            gpu_memory_utilization=cfg.memory_utilization(cpu=current_platform.is_cpu()),
            tensor_parallel_size=cfg.tensor_parallel_size,
            max_num_seqs=cfg.max_num_seqs,
            enforce_eager=cfg.enforce_eager,
            limit_mm_per_prompt={"image": 1},
            max_logprobs=MAX_LOGPROBS,
            seed=0,
        )
        self._closed = threading.Event()
        threading.Thread(target=self._watch, name="genixer-engine-watch", daemon=True).start()

    def _watch(self) -> None:
        """Turn the engine-core process's death into an error of the call waiting on it.

        vLLM 0.32 notices the death (its monitor marks the client dead and shuts it down), but a
        synchronous ``LLM.generate`` already waiting on the output queue then waits forever. This
        puts ``EngineDeadError`` on that queue, as vLLM's own output thread does for its errors,
        so the call raises and the actor restarts instead of hanging.
        """
        from vllm.v1.engine.exceptions import EngineDeadError

        client = self.llm.llm_engine.engine_core
        resources, outputs = getattr(client, "resources", None), getattr(client, "outputs_queue", None)
        if resources is None or outputs is None:  # an in-process engine: its errors raise directly
            return
        while not self._closed.wait(0.5):
            if resources.engine_dead:
                outputs.put_nowait(EngineDeadError())
                return

    def close(self) -> None:
        """Stop the engine-core subprocess now rather than at interpreter exit."""
        self._closed.set()
        self.llm.llm_engine.engine_core.shutdown()

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

    def _run(self, prompts: list[dict], params: list, result) -> list[GenerationResult]:
        from vllm.exceptions import VLLMClientError

        if not prompts:
            return []
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        except VLLMClientError as e:
            # vLLM validates the whole list before running any of it: one bad request (too long,
            # say) fails the call. Retry one by one so only that request becomes an error.
            if len(prompts) == 1:
                too_long = getattr(e, "parameter", None) == "input_tokens" or "maximum model length" in str(e)
                code = "prompt_too_long" if too_long else "request_rejected"
                return [GenerationResult.failed(code, str(e))]
            return [r for p, sp in zip(prompts, params) for r in self._run([p], [sp], result)]
        except Exception as e:  # the engine itself: dead worker, out of memory, ...
            raise EngineError(f"vLLM engine failed: {type(e).__name__}: {e}") from e
        return [result(o, sp.logprobs) for o, sp in zip(outputs, params)]

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
