"""Optional vLLM rollout engine (``rollout.engine: vllm``), for GPUs.

vLLM samples from the same token ids as the HF path (``TokenExactPolicy`` hands it the prompts) and
returns the sampled ids with the log-probs of the distribution it sampled from (after temperature:
``logprobs_mode="processed_logprobs"``). The trainer keeps those as the sampler's log-probs and corrects
the small trainer/sampler mismatch with truncated importance weights (``rollout.importance_cap``).
After every optimizer step the trainer's weights are loaded into the engine (``sync_weights``).

Not exercised by the test suite (no GPU, no vLLM there): it is written against vLLM's public ``LLM``
API (``generate`` with ``TokensPrompt``, ``apply_model``, ``reset_prefix_cache``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from agentgym.types import Generation


class VLLMEngine:
    def __init__(self, model_dir: Any, tokenizer: Any, rollout: Any, seed: int = 0) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise RuntimeError("rollout.engine=vllm needs vLLM on a CUDA machine: pip install vllm") from exc
        # in-process engine, so weights can be handed over as tensors without serialization
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.tokenizer = tokenizer
        self.llm = vllm.LLM(
            model=str(model_dir),
            tokenizer=str(model_dir),
            seed=seed,
            dtype="bfloat16",
            gpu_memory_utilization=rollout.vllm_gpu_memory_utilization,
            enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",
        )
        self._calls = 0
        self._seed = seed

    def generate(
        self, prompts: Sequence[list[int]], temperature: float, max_new_tokens: int
    ) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        eos = self.tokenizer.eos_token_id
        self._calls += 1
        params = SamplingParams(
            temperature=temperature,
            top_p=1.0,
            top_k=-1 if temperature > 0 else 1,
            max_tokens=max_new_tokens,
            logprobs=0,
            stop_token_ids=[eos],
            skip_special_tokens=True,
            seed=self._seed * 100_003 + self._calls,
        )
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False
        )
        generations = []
        for out in outputs:
            completion = out.outputs[0]
            ids = list(completion.token_ids)
            logprobs = [step[token].logprob for step, token in zip(completion.logprobs, ids, strict=True)]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            generations.append(Generation(text, ids, logprobs))
        return generations

    def sync_weights(self, model: Any, runtime: Any) -> None:
        """Load the trainer's current weights into the engine (rank-local full state dict)."""
        from agentgym.trainers.distributed import full_state_dict

        weights = full_state_dict(model, runtime, every_rank=True)
        self.llm.apply_model(lambda engine_model: engine_model.load_weights(weights.items()))
        self.llm.reset_prefix_cache()
