"""Policies: map a batch of chats to a batch of responses.

Specs (``make_policy``):
    random                     a well-formatted response with a uniformly random command
    oracle                     the environment's ``oracle_action()``
    hf:<name or path>          a transformers causal LM (CPU or GPU), batched generation
    openai:<model>@<base_url>  any OpenAI-compatible chat server (vLLM, SGLang, hosted APIs)
    checkpoint:<run dir>       the newest ``checkpoint-N`` of an ``agentgym train`` run (an hf: model)
"""

from __future__ import annotations

import json
import os
import warnings
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from agentgym.types import Chat, Generation


class Policy(ABC):
    spec: str = ""

    @abstractmethod
    def act(self, chats: Sequence[Chat], envs: Sequence[Any]) -> list[Generation]:
        """Responses for ``chats``; ``envs[i]`` is the environment that ``chats[i]`` talks to."""

    def close(self) -> None:
        """Free what the policy holds (models, clients)."""
        return None


class RandomPolicy(Policy):
    """Uniformly random commands. The generator is seeded from the chat itself, so an episode's random
    play depends only on its seed, not on batching, workers or resumption."""

    spec = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def act(self, chats: Sequence[Chat], envs: Sequence[Any]) -> list[Generation]:
        out = []
        for chat, env in zip(chats, envs, strict=True):
            digest = zlib.crc32(json.dumps(chat, sort_keys=True).encode())
            rng = np.random.default_rng([self.seed, digest])
            out.append(Generation(env.unwrapped.random_action(rng)))
        return out


class OraclePolicy(Policy):
    """The environment's own perfect play: BFS plans, gold answers, reference solutions, walkthroughs."""

    spec = "oracle"

    def act(self, chats: Sequence[Chat], envs: Sequence[Any]) -> list[Generation]:
        return [Generation(env.unwrapped.oracle_action()) for env in envs]


# A ChatML-like template for tokenizers that come without one (base models, tokenizers trained locally).
DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding, a pad token (eos when there is none) and a chat template."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


class HFPolicy(Policy):
    """A transformers causal LM. Sampling is plain temperature sampling (no top-k / top-p), so the
    returned log-probs are exactly those of the sampling distribution; ``temperature=0`` is greedy
    decoding, whose log-probs are taken at temperature 1."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any | None = None,
        *,
        temperature: float = 0.0,
        max_new_tokens: int = 256,
        device: str | None = None,
        dtype: str | None = None,
        seed: int = 0,
        gguf_file: str | None = None,
        spec: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if isinstance(model, (str, os.PathLike)):
            self.spec = f"hf:{model}"
            torch_dtype = (
                getattr(torch, dtype) if dtype else (torch.bfloat16 if self.device == "cuda" else None)
            )
            extra = {"gguf_file": gguf_file} if gguf_file else {}
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model, **extra)
            model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, **extra)
        if tokenizer is None:
            raise ValueError("a model object needs its tokenizer")
        self.model = model.to(self.device).eval()
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.temperature, self.max_new_tokens = temperature, max_new_tokens
        self.spec = spec or self.spec  # how results name this policy; default hf:<path> for a loaded model
        self._seed = seed

    def reseed(self, seed: int) -> None:
        """Sample the next ``generate`` calls from torch seeds ``seed``, ``seed + 1``, ..."""
        self._seed = seed

    def encode_chats(self, chats: Sequence[Chat]) -> list[list[int]]:
        return [
            self.tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, tokenize=True, return_dict=False
            )
            for chat in chats
        ]

    def act(self, chats: Sequence[Chat], envs: Sequence[Any] = ()) -> list[Generation]:
        return self.generate(self.encode_chats(chats))

    def generate(self, prompts: Sequence[list[int]]) -> list[Generation]:
        """Sample a response for each prompt (token ids); left-padded batch, KV cache, eval mode."""
        import torch

        pad_id = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=self.device)
        attention_mask = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device
        )
        sample = self.temperature > 0
        options = (
            {"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0}
            if sample
            else {"do_sample": False}
        )
        torch.manual_seed(self._seed)
        self._seed += 1
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=self.tokenizer.eos_token_id,
                return_dict_in_generate=True,
                output_scores=True,
                use_cache=True,
                **options,
            )
        new_ids = out.sequences[:, width:]
        # scores are the processed logits the token was drawn from: logits / temperature when sampling
        logprobs = torch.stack(out.scores, dim=1).float().log_softmax(-1)
        chosen = logprobs.gather(-1, new_ids.unsqueeze(-1)).squeeze(-1)
        generations = []
        eos = self.tokenizer.eos_token_id
        for row in range(len(prompts)):
            ids = new_ids[row].tolist()
            length = ids.index(eos) + 1 if eos in ids else len(ids)  # keep the end-of-turn token
            text = self.tokenizer.decode(ids[:length], skip_special_tokens=True)
            generations.append(Generation(text, ids[:length], chosen[row, :length].tolist()))
        return generations

    def close(self) -> None:
        self.model = None


class OpenAIPolicy(Policy):
    """Any OpenAI-compatible chat-completions server; requests of a batch run concurrently."""

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        temperature: float = 0.0,
        max_tokens: int = 512,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout: float = 120.0,
    ) -> None:
        from openai import OpenAI

        self.spec = f"openai:{model}@{base_url}"
        self.model, self.temperature, self.max_tokens = model, temperature, max_tokens
        self.client = OpenAI(
            base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY", "EMPTY"), timeout=timeout
        )
        self.pool = ThreadPoolExecutor(max_workers=concurrency)

    def _one(self, chat: Chat) -> Generation:
        messages: Any = chat  # the SDK types each role's message; a Chat is exactly such a list
        reply = self.client.chat.completions.create(
            model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens
        )
        return Generation(reply.choices[0].message.content or "")

    def act(self, chats: Sequence[Chat], envs: Sequence[Any] = ()) -> list[Generation]:
        return list(self.pool.map(self._one, chats))

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.client.close()


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The ``checkpoint-N`` folder with the largest N in an ``agentgym train`` run directory."""
    run_dir = Path(run_dir)
    checkpoints = [p for p in run_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    if not checkpoints:
        raise FileNotFoundError(f"no checkpoint-N folder in {run_dir}")
    return max(checkpoints, key=lambda p: int(p.name.split("-")[-1]))


def make_policy(spec: str, **kwargs: Any) -> Policy:
    """A policy from its spec string (see the module docstring); ``kwargs`` go to its constructor."""
    kind, _, rest = spec.partition(":")
    if spec == "random":
        return RandomPolicy(**kwargs)
    if spec == "oracle":
        if kwargs:
            warnings.warn(f"the oracle policy ignores {sorted(kwargs)}", stacklevel=2)
        return OraclePolicy()
    if kind == "hf" and rest:
        return HFPolicy(rest, **kwargs)
    if kind == "checkpoint" and rest:
        return HFPolicy(str(latest_checkpoint(rest)), spec=spec, **kwargs)
    if kind == "openai" and rest:
        model, at, base_url = rest.partition("@")
        if not at or not model or not base_url:
            raise ValueError(f"an openai policy is openai:<model>@<base_url>, got {spec!r}")
        return OpenAIPolicy(model, base_url, **kwargs)
    raise ValueError(
        f"unknown policy {spec!r}; use random, oracle, hf:<name or path>, openai:<model>@<base_url> "
        "or checkpoint:<run dir>"
    )
