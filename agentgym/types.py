"""The vocabulary shared by environments' rollouts, policies, trainers and evals.

A policy reads a ``Chat`` (the messages so far) and answers with a ``Generation``; trainable policies also
report the exact token ids they sampled and their log-probs, which token-exact training needs.
"""

from __future__ import annotations

from dataclasses import dataclass

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": text}
Chat = list[Message]


@dataclass
class Generation:
    """One response; trainable policies also give the exact sampled token ids and their log-probs.

    ``finish_reason``: why generation stopped, as OpenAI-compatible servers name it: ``"stop"`` (the model
    ended its turn) or ``"length"`` (cut at the token limit); None when the policy does not say (scripted
    policies). ``error``: set when no response could be had (e.g. the server stayed unreachable after its
    retries); the rollout then ends the episode as aborted instead of stepping the environment."""

    text: str
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    finish_reason: str | None = None
    error: str | None = None
