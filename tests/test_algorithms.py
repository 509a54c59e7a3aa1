"""Advantages and losses: GAE on masked sequences, group baselines, clip-higher, KL estimators."""

from __future__ import annotations

import pytest
import torch

from agentgym.trainers import algorithms as alg


def _compressed_gae(rewards, values, gamma, lam):
    """Textbook GAE on a plain sequence."""
    advantages, running, next_value = [], 0.0, 0.0
    for r, v in zip(reversed(rewards), reversed(values), strict=True):
        delta = r + gamma * next_value - v
        running = delta + gamma * lam * running
        advantages.append(running)
        next_value = v
    return advantages[::-1]


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.9, 0.95), (0.5, 0.0)])
def test_masked_gae_equals_gae_on_the_compressed_sequence(gamma, lam):
    torch.manual_seed(0)
    batch, steps = 3, 20
    mask = (torch.rand(batch, steps) > 0.5).float()
    mask[:, 3] = 1.0
    values = torch.randn(batch, steps)
    rewards = torch.randn(batch, steps) * mask  # rewards only on trainable tokens
    advantages, targets = alg.masked_gae(rewards, values, mask, gamma, lam)
    for row in range(batch):
        keep = mask[row].bool()
        expected = _compressed_gae(rewards[row][keep].tolist(), values[row][keep].tolist(), gamma, lam)
        torch.testing.assert_close(advantages[row][keep], torch.tensor(expected), rtol=1e-5, atol=1e-5)
        assert torch.all(advantages[row][~keep] == 0)
        torch.testing.assert_close(targets[row][keep], advantages[row][keep] + values[row][keep])


def test_gae_with_gamma_lambda_one_and_terminal_reward_is_return_minus_value():
    mask = torch.tensor([[0, 1, 1, 0, 0, 1, 1, 0.0]])
    values = torch.tensor([[9, 0.1, 0.2, 9, 9, 0.3, 0.4, 9]])
    rewards = torch.zeros_like(values)
    rewards[0, 6] = 2.0  # the episode return on the last trainable token
    advantages, _ = alg.masked_gae(rewards, values, mask)
    torch.testing.assert_close(advantages[0, mask[0].bool()], torch.tensor([1.9, 1.8, 1.7, 1.6]))


def test_group_advantages_grpo_and_drgrpo():
    returns = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    grpo = alg.group_advantages(returns, groups, scale_by_std=True)
    std = torch.tensor([1.0, 0, 0, 1]).std()
    torch.testing.assert_close(grpo[:4], (torch.tensor([1.0, 0, 0, 1]) - 0.5) / (std + 1e-6))
    dr = alg.group_advantages(returns, groups, scale_by_std=False)
    torch.testing.assert_close(dr[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]))
    # a group whose rewards are all equal gets zero advantage under both
    assert torch.all(grpo[4:] == 0) and torch.all(dr[4:] == 0)


def test_clip_higher_is_asymmetric():
    old = torch.zeros(4)
    logp = torch.log(torch.tensor([1.25, 1.35, 0.85, 0.75]))
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, ratio, clipped = alg.clipped_policy_loss(logp, old, adv, clip_low=0.2, clip_high=0.28)
    # 1.25 < 1.28: not clipped; 1.35 > 1.28: clipped; 0.85 > 0.8: not clipped; 0.75 < 0.8: clipped
    assert clipped.tolist() == [0.0, 1.0, 0.0, 1.0]
    torch.testing.assert_close(loss, torch.tensor([-1.25, -1.28, 0.85, 0.8]))


def test_ratio_one_means_nothing_clipped_and_plain_policy_gradient():
    logits = torch.randn(2, 5, 11, requires_grad=True)
    targets = torch.randint(0, 11, (2, 5))
    logp, _ = alg.token_logprobs(logits, targets)
    adv = torch.randn(2, 5)
    loss, ratio, clipped = alg.clipped_policy_loss(logp, logp.detach(), adv)
    assert torch.all(ratio == 1) and clipped.sum() == 0
    loss.sum().backward()
    grad = logits.grad.clone()
    logits.grad = None
    logp2, _ = alg.token_logprobs(logits, targets)
    (-(logp2 * adv).sum()).backward()
    torch.testing.assert_close(grad, logits.grad)


def test_masked_tokens_get_zero_gradient():
    logits = torch.randn(2, 6, 13, requires_grad=True)
    targets = torch.randint(0, 13, (2, 6))
    mask = torch.tensor([[0, 0, 1, 1, 0, 1], [0, 1, 1, 0, 0, 0.0]])
    logp, entropy = alg.token_logprobs(logits, targets, temperature=0.7, with_entropy=True, entropy_grad=True)
    per_token, _, _ = alg.clipped_policy_loss(logp, logp.detach(), torch.ones_like(logp))
    per_token = per_token + 0.1 * alg.kl_estimate(logp, logp.detach() - 0.3) - 0.01 * entropy
    (per_token * mask).sum().backward()
    norms = logits.grad.norm(dim=-1)
    assert torch.all(norms[mask == 0] == 0)
    assert torch.all(norms[mask == 1] > 0)


def test_kl_estimators():
    logp = torch.log(torch.tensor([0.5, 0.2]))
    ref = torch.log(torch.tensor([0.25, 0.2]))
    k1 = alg.kl_estimate(logp, ref, "k1")
    k3 = alg.kl_estimate(logp, ref, "k3")
    torch.testing.assert_close(k1, torch.tensor([torch.log(torch.tensor(2.0)).item(), 0.0]))
    torch.testing.assert_close(k3, torch.tensor([0.5 - torch.log(torch.tensor(0.5)).item() - 1, 0.0]))
    assert torch.all(alg.kl_estimate(torch.randn(100), torch.randn(100), "k3") >= 0)
    with pytest.raises(ValueError):
        alg.kl_estimate(logp, ref, "k2")


def test_temperature_and_entropy():
    logits = torch.tensor([[[2.0, 0.0, -1.0]]])
    logp, entropy = alg.token_logprobs(logits, torch.tensor([[0]]), temperature=2.0, with_entropy=True)
    probs = torch.softmax(logits / 2.0, -1)
    torch.testing.assert_close(logp, probs[..., 0].log())
    torch.testing.assert_close(entropy, -(probs * probs.log()).sum(-1))


def test_value_loss_clipping():
    values = torch.tensor([1.0, 0.0])
    old = torch.tensor([0.0, 0.0])
    targets = torch.tensor([1.0, 1.0])
    loss, clipped = alg.clipped_value_loss(values, old, targets, clip=0.2)
    # first: unclipped error 0, clipped value 0.2 -> error 0.64; PPO takes the max
    torch.testing.assert_close(loss, torch.tensor([0.5 * 0.64, 0.5]))
    assert clipped.tolist() == [1.0, 0.0]
