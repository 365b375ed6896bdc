"""The transformers backend: batched ``generate`` of an image-text-to-text model.

Sampling is done per row by :class:`_RowSampler`, with each row's own temperature, top-p and a
``torch.Generator`` seeded from the row's seed. transformers' own sampling draws from one global
generator for the whole batch, so a row's output would depend on which rows share its batch; here
it depends only on the row, which is what a resumable, re-runnable pipeline needs.
"""

from __future__ import annotations

from collections.abc import Sequence

from genixer_ray.config import EngineConfig
from genixer_ray.engines.base import (
    EngineError,
    GenerationRequest,
    GenerationResult,
    Generator,
    chat_prompt,
    prompt_too_long,
)


class _RowSampler:
    """A logits processor that picks each row's next token itself and masks out all others.

    It runs under greedy decoding (``do_sample=False``), so the token it leaves unmasked is the
    one generated. Temperature, top-p and inverse-CDF sampling are done for the whole batch at
    once (top-k, then top-p); only the one uniform number per row and step comes from that row's own generator
    (cheap, on the CPU), which is what makes a row's tokens independent of its batch.
    """

    def __init__(self, requests: Sequence[GenerationRequest], device):
        import torch

        self.device = device
        self.temperature = torch.tensor([r.sampling.temperature for r in requests], device=device)
        self.top_p = torch.tensor([r.sampling.top_p for r in requests], device=device)
        self.top_k = torch.tensor([r.sampling.top_k for r in requests], device=device)
        self.generators = [torch.Generator().manual_seed(r.sampling.seed) for r in requests]

    def __call__(self, input_ids, scores):
        import torch

        logits = scores.float()
        greedy = self.temperature == 0.0
        t = torch.where(greedy, torch.ones_like(self.temperature), self.temperature)
        probs = torch.softmax(logits / t[:, None], dim=-1)
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        # top_k first (0: no limit), then top_p over what is left renormalized, as vLLM and
        # transformers' warpers do: keep the smallest prefix whose mass reaches top_p of it.
        rank = torch.arange(sorted_p.shape[1], device=sorted_p.device)[None, :]
        sorted_p = sorted_p.masked_fill((self.top_k[:, None] > 0) & (rank >= self.top_k[:, None]), 0.0)
        kept = sorted_p.sum(dim=-1, keepdim=True)
        sorted_p = sorted_p.masked_fill(torch.cumsum(sorted_p, dim=-1) - sorted_p >= self.top_p[:, None] * kept, 0.0)
        cdf = torch.cumsum(sorted_p, dim=-1)
        u = torch.cat([torch.rand(1, generator=g) for g in self.generators]).to(self.device) * cdf[:, -1]
        idx = torch.searchsorted(cdf, u[:, None], right=True).clamp_(max=cdf.shape[1] - 1)
        chosen = torch.where(greedy, logits.argmax(dim=-1), order.gather(1, idx).squeeze(1))
        masked = torch.full_like(scores, float("-inf"))
        masked[torch.arange(scores.shape[0], device=scores.device), chosen] = 0.0
        return masked


class TransformersGenerator(Generator):
    """An HF ``AutoModelForImageTextToText`` with its processor, on a GPU when there is one."""

    backend = "transformers"

    def __init__(self, cfg: EngineConfig, model_path: str):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.cfg = cfg
        self.model_path = model_path
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.processor = AutoProcessor.from_pretrained(model_path)
        # Decoder-only batches must be padded on the left so every row ends at the same position.
        self.processor.tokenizer.padding_side = "left"
        dtype = "auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
        self.model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.processor.tokenizer.eos_token_id
        return set(eos if isinstance(eos, list) else [eos])

    def format_prompt(self, instruction: str) -> str:
        """The chat-formatted prompt for ``instruction`` (see :func:`chat_prompt`)."""
        return chat_prompt(self.processor, instruction)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Generate for a batch in one ``generate`` call; over-long prompts become error results."""
        return self._serve(requests, self._generate)

    def next_token_logprobs(self, requests: Sequence[GenerationRequest], token_ids: Sequence[int]) -> list[GenerationResult]:
        """One greedy step through the same ``generate`` path; the raw logits give the logprobs."""
        ids = [int(t) for t in token_ids]

        def score(batch, inputs) -> list[GenerationResult]:
            import torch

            out = self._run_generate(batch, inputs, max_new=1)
            lp = torch.log_softmax(out.logits[0].float(), dim=-1)[:, ids].tolist()
            first = out.sequences[:, inputs["input_ids"].shape[1]].tolist()
            lens = inputs["attention_mask"].sum(dim=1).tolist()
            return [
                GenerationResult(text="", token_ids=[t], top_logprobs=[dict(zip(ids, row))], finish_reason="length", prompt_tokens=int(n))
                for t, row, n in zip(first, lp, lens)
            ]

        return self._serve(requests, score)

    def _serve(self, requests: Sequence[GenerationRequest], run) -> list[GenerationResult]:
        """Encode a batch, turn over-long prompts into error results, ``run`` the rest in one call."""
        import torch

        if not requests:
            return []
        results: list[GenerationResult | None] = [None] * len(requests)
        todo = list(range(len(requests)))
        inputs = self._encode([requests[i] for i in todo])
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        if any(prompt_too_long(n, self.cfg.max_model_len) for n in lengths):
            # Rare path: record the over-long rows and encode the rest again without them.
            for i, n in zip(list(todo), lengths):
                if msg := prompt_too_long(n, self.cfg.max_model_len):
                    results[i] = GenerationResult.failed("prompt_too_long", msg)
                    todo.remove(i)
            inputs = self._encode([requests[i] for i in todo]) if todo else None
        if todo:
            try:
                with torch.inference_mode():
                    outs = run([requests[i] for i in todo], inputs)
            except Exception as e:
                raise EngineError(f"transformers generate failed: {type(e).__name__}: {e}") from e
            for i, res in zip(todo, outs):
                res.engine_running = float(len(todo))  # one padded batch: every row runs to the longest
                results[i] = res
        return results  # type: ignore[return-value]

    def _encode(self, batch: Sequence[GenerationRequest]):
        from PIL import Image

        return self.processor(
            images=[Image.fromarray(r.image) for r in batch],
            text=[self.format_prompt(r.instruction) for r in batch],
            padding=True,
            return_tensors="pt",
        ).to(self.device)

    def _run_generate(self, batch: Sequence[GenerationRequest], inputs, *, max_new: int):
        return self.model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=max_new,
            logits_processor=[_RowSampler(batch, self.device)],
            output_logits=True,  # raw logits: logprobs match vLLM's default (raw) mode
            return_dict_in_generate=True,
            pad_token_id=self.processor.tokenizer.pad_token_id,
        )

    def _generate(self, batch: Sequence[GenerationRequest], inputs) -> list[GenerationResult]:
        import torch

        prompt_lens = inputs["attention_mask"].sum(dim=1).tolist()
        max_new = max(r.sampling.max_tokens for r in batch)
        out = self._run_generate(batch, inputs, max_new=max(1, min(max_new, self.cfg.max_model_len - max(prompt_lens))))
        start = inputs["input_ids"].shape[1]
        new_tokens = out.sequences[:, start:]
        logprobs = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)  # (B, T, V)
        results = []
        for b, r in enumerate(batch):
            ids: list[int] = []
            finish = "length"
            for t in new_tokens[b].tolist()[: r.sampling.max_tokens]:
                ids.append(t)
                if t in self.eos_ids:
                    finish = "stop"
                    break
            lp = logprobs[b, : len(ids)]
            chosen = lp.gather(1, torch.tensor(ids, device=lp.device).unsqueeze(1)).squeeze(1).tolist() if ids else []
            top = []
            if r.sampling.logprobs:
                vals, idx = torch.topk(lp, r.sampling.logprobs, dim=-1)
                top = [dict(zip(i.tolist(), v.tolist())) for i, v in zip(idx, vals)]
            text_ids = [t for t in ids if t not in self.eos_ids]
            results.append(
                GenerationResult(
                    text=self.processor.tokenizer.decode(text_ids, skip_special_tokens=True),
                    token_ids=ids,
                    logprobs=chosen,
                    top_logprobs=top,
                    finish_reason=finish,
                    prompt_tokens=int(prompt_lens[b]),
                )
            )
        return results
