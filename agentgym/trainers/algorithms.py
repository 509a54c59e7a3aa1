"""The RL algorithms (PPO, GRPO, Dr.GRPO) and the losses they share.

An algorithm object says what differs between them: whether a critic is trained, and how returns become
advantages. ``ALGORITHMS`` maps ``algorithm.name`` to its class; the trainer picks one once.

    PPO      a critic; GAE over the trainable tokens, whitened over every trainable token of the step
    GRPO     no critic; an episode's advantage is the z-score of its return within its group
    Dr.GRPO  no critic; the return minus its group's mean (no division by the std)

The losses (clipped policy loss with clip-higher, KL estimators, entropy, clipped value loss) are the
same for all three.

Conventions: tensors are (batch, time); ``mask`` is 1 on trainable (generated) tokens and 0 on prompt,
observation and pad tokens. Per-token losses are returned unreduced: the trainer sums them and divides by
the global number of trainable tokens, so micro-batches add up to exactly one big batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar, TypeAlias

import torch

from agentgym.trainers.config import AlgorithmConfig


def token_logprobs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(target) under softmax(logits / temperature), and optionally the entropy of that distribution
    (differentiable only with ``entropy_grad``: as a metric it costs no autograd memory).

    ``logits[:, t]`` must be the prediction for ``targets[:, t]`` (shift before calling).
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            source = logp_all if entropy_grad else logp_all.detach()
            entropy = -(source.exp() * source).sum(-1)
    return logp, entropy


def masked_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over the trainable tokens only.

    Positions where ``mask`` is 0 are skipped as if they were not there: the next value and the running
    advantage pass through them unchanged, so the result equals GAE on the compressed sequence of
    trainable tokens. Rewards must sit on trainable tokens. Returns (advantages, value targets), zero
    off the mask.
    """
    mask = mask.to(values.dtype)
    batch, steps = values.shape
    advantages = torch.zeros_like(values)
    running = values.new_zeros(batch)
    next_value = values.new_zeros(batch)
    for t in reversed(range(steps)):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = delta + gamma * lam * running
        advantages[:, t] = adv_t * m
        running = m * adv_t + (1 - m) * running
        next_value = m * values[:, t] + (1 - m) * next_value
    return advantages, (advantages + values) * mask


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate with asymmetric clipping (clip-higher, DAPO): per-token loss, ratio, clipped.

    The ratio is clipped to [1 - clip_low, 1 + clip_high]. ``weights`` (optional, no gradient) multiply the
    per-token loss, e.g. a truncated importance weight between the trainer and a separate sampler.
    """
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped_ratio = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    clipped = clipped_ratio * advantages
    loss = -torch.minimum(unclipped, clipped)
    was_clipped = (clipped < unclipped).float()  # the clip bound was the active term
    if weights is not None:
        loss = loss * weights
    return loss, ratio, was_clipped


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy (Schulman's k1, k3)."""
    log_ratio = ref_logp - logp
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        # exp(x) - x - 1 >= 0, unbiased; clamp so one outlier token cannot overflow
        log_ratio = log_ratio.clamp(-20.0, 20.0)
        return torch.exp(log_ratio) - log_ratio - 1.0
    raise ValueError(f"KL estimator must be 'k1' or 'k3', got {estimator!r}")


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, targets: torch.Tensor, clip: float | None = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token critic loss 0.5 (V - target)^2, PPO-clipped around the rollout-time values."""
    loss = (values - targets) ** 2
    if clip is None:
        return 0.5 * loss, torch.zeros_like(loss)
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    clipped_loss = (clipped_values - targets) ** 2
    return 0.5 * torch.maximum(loss, clipped_loss), (clipped_loss > loss).float()


# ----- the algorithms -----


class GroupRelative(ABC):
    """Critic-free (GRPO family): an episode's advantage compares its return with the other episodes of its
    group (same env seed), so the group is the baseline. A group whose returns are all equal teaches
    nothing and gets advantage 0."""

    name: ClassVar[str]
    needs_critic: ClassVar[bool] = False

    def __init__(self, eps: float = 1e-6) -> None:
        self.eps = eps

    @classmethod
    def from_config(cls, config: AlgorithmConfig) -> GroupRelative:
        return cls(eps=config.norm_eps)

    def advantages(self, returns: torch.Tensor) -> torch.Tensor:
        """Advantages of shape (groups, group_size) from returns of that shape (float64)."""
        returns = torch.as_tensor(returns, dtype=torch.float64)
        if returns.ndim != 2:
            raise ValueError(f"returns must have shape (groups, group_size), got {tuple(returns.shape)}")
        if returns.shape[1] < 2:  # nothing to compare an episode with
            return torch.zeros_like(returns)
        equal = returns.amax(dim=1, keepdim=True) == returns.amin(dim=1, keepdim=True)
        # exactly 0 for equal returns, not a rounding error of the mean divided by eps
        return torch.where(equal, 0.0, self.relative(returns))

    @abstractmethod
    def relative(self, returns: torch.Tensor) -> torch.Tensor:
        """Each return against its group's, before equal groups are set to 0."""


class GRPO(GroupRelative):
    """GRPO: (return - group mean) / (group std + eps), the std unbiased (n - 1)."""

    name = "grpo"

    def relative(self, returns: torch.Tensor) -> torch.Tensor:
        mean = returns.mean(dim=1, keepdim=True)
        std = returns.std(dim=1, keepdim=True, correction=1)
        return (returns - mean) / (std + self.eps)


class DrGRPO(GroupRelative):
    """Dr.GRPO: return - group mean. Without the std division, groups of nearly equal returns are not
    blown up to unit scale."""

    name = "drgrpo"

    def relative(self, returns: torch.Tensor) -> torch.Tensor:
        return returns - returns.mean(dim=1, keepdim=True)


class PPO:
    """PPO: a critic predicts the value of each trainable token; advantages are GAE over the trainable
    tokens (``masked_gae``), then whitened over every trainable token of the step."""

    name: ClassVar[str] = "ppo"
    needs_critic: ClassVar[bool] = True

    def __init__(self, gamma: float = 1.0, lam: float = 1.0, eps: float = 1e-6) -> None:
        self.gamma, self.lam, self.eps = gamma, lam, eps

    @classmethod
    def from_config(cls, config: AlgorithmConfig) -> PPO:
        return cls(gamma=config.gamma, lam=config.lam, eps=config.norm_eps)

    def advantages(
        self,
        rewards: Sequence[torch.Tensor],
        values: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor],
        all_sum: Callable[[float], float] = float,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(advantages, value targets) of each micro-batch of a step. The whitening statistics cover every
        micro-batch; ``all_sum`` adds a number over the processes (the identity in one process)."""
        gae = [
            masked_gae(r, v, m, self.gamma, self.lam) for r, v, m in zip(rewards, values, masks, strict=True)
        ]
        count = all_sum(sum(float(m.sum()) for m in masks)) or 1.0
        mean = all_sum(sum(float((a * m).sum()) for (a, _), m in zip(gae, masks, strict=True))) / count
        var = all_sum(sum(float(((a - mean) ** 2 * m).sum()) for (a, _), m in zip(gae, masks, strict=True)))
        std = (var / count) ** 0.5
        return [
            ((a - mean) / (std + self.eps) * m, targets) for (a, targets), m in zip(gae, masks, strict=True)
        ]


Algorithm: TypeAlias = PPO | GroupRelative
ALGORITHMS: dict[str, type[PPO] | type[GroupRelative]] = {"ppo": PPO, "grpo": GRPO, "drgrpo": DrGRPO}


def make_algorithm(config: AlgorithmConfig) -> Algorithm:
    """The algorithm object ``config.name`` names, built from ``config``."""
    if config.name not in ALGORITHMS:
        raise ValueError(f"algorithm.name must be one of {sorted(ALGORITHMS)}, got {config.name!r}")
    return ALGORITHMS[config.name].from_config(config)
