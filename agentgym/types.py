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
    """One response; trainable policies also give the exact sampled token ids and their log-probs."""

    text: str
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
