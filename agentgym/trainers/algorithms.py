"""Advantages and losses: GAE over trainable tokens, GRPO / Dr.GRPO group baselines, the clipped
policy-gradient loss with clip-higher, KL estimators (k1, k3) and entropy.

Conventions: tensors are (batch, time); ``mask`` is 1 on trainable (generated) tokens and 0 on prompt,
observation and pad tokens. Per-token losses are returned unreduced: the trainer sums them and divides by
the global number of trainable tokens, so micro-batches add up to exactly one big batch.
"""

from __future__ import annotations

import torch


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


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


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


def group_advantages(
    returns: torch.Tensor, group_ids: torch.Tensor, scale_by_std: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """One advantage per episode relative to its group: GRPO's z-score, or Dr.GRPO's mean-only baseline.

    The std is the unbiased sample std of the group (a single-episode group gets advantage 0).
    A group whose returns are all equal gets advantage 0 under both.
    """
    returns = returns.double()
    advantages = torch.zeros_like(returns)
    for g in torch.unique(group_ids):
        idx = group_ids == g
        r = returns[idx]
        centred = r - r.mean()
        if scale_by_std:
            std = r.std(unbiased=True) if len(r) > 1 else r.new_zeros(())
            centred = centred / (std + eps)
        advantages[idx] = centred
    return advantages.float()


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
