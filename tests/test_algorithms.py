"""The algorithms and their losses: GAE on masked sequences, group baselines, PPO whitening, clip-higher,
KL estimators."""

from __future__ import annotations

import math

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


def test_gae_on_a_masked_sequence_by_hand():
    # trainable tokens at 1, 2 and 4; the others (prompt, observation) are skipped as if absent
    mask = torch.tensor([[0, 1, 1, 0, 1.0]])
    values = torch.tensor([[9, 0.5, 0.25, 9, 1.0]])
    rewards = torch.tensor([[0, 0, 0, 0, 2.0]])
    advantages, targets = alg.masked_gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # t=4: delta = 2 - 1 = 1                      -> A = 1
    # t=2: delta = 0.9 * 1.0 - 0.25 = 0.65         -> A = 0.65 + 0.9 * 0.5 * 1 = 1.1
    # t=1: delta = 0.9 * 0.25 - 0.5 = -0.275       -> A = -0.275 + 0.45 * 1.1 = 0.22
    torch.testing.assert_close(advantages, torch.tensor([[0, 0.22, 1.1, 0, 1.0]]))
    torch.testing.assert_close(targets, torch.tensor([[0, 0.72, 1.35, 0, 2.0]]))  # A + V, zero off the mask


RETURNS = torch.tensor([[1.0, 0, 0, 1], [2, 2, 2, 2]])


def test_grpo_is_the_z_score_with_the_unbiased_std():
    advantages = alg.GRPO(eps=1e-6).advantages(RETURNS)
    # group 0: mean 0.5, unbiased std sqrt((4 * 0.25) / 3) = sqrt(1 / 3)
    z = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    expected = torch.tensor([[z, -z, -z, z], [0, 0, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(advantages, expected, rtol=1e-12, atol=0)
    # an uneven group: returns 3, 0, 0 -> mean 1, unbiased variance (4 + 1 + 1) / 2 = 3
    uneven = alg.GRPO(eps=0.0).advantages(torch.tensor([[3.0, 0, 0]]))
    root3 = math.sqrt(3)
    torch.testing.assert_close(
        uneven, torch.tensor([[2 / root3, -1 / root3, -1 / root3]], dtype=torch.float64)
    )


def test_drgrpo_subtracts_the_group_mean_only():
    advantages = alg.DrGRPO().advantages(RETURNS)
    assert advantages.tolist() == [[0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0]]


@pytest.mark.parametrize("algorithm", [alg.GRPO(), alg.DrGRPO()], ids=["grpo", "drgrpo"])
def test_equal_groups_get_exactly_zero(algorithm):
    # 0.1 has no exact binary form: the mean differs from 0.1 by a rounding error, which must not leak
    returns = torch.tensor([[0.1, 0.1, 0.1], [-0.3, -0.3, -0.3], [5.0, 5.0, 5.0]], dtype=torch.float64)
    assert torch.all(algorithm.advantages(returns) == 0)
    assert torch.all(algorithm.advantages(torch.tensor([[0.7]])) == 0)  # a one-episode group
    with pytest.raises(ValueError, match="groups, group_size"):
        algorithm.advantages(torch.tensor([1.0, 0.0]))


def test_ppo_whitens_gae_over_every_micro_batch():
    ppo = alg.PPO(gamma=1.0, lam=1.0, eps=1e-6)
    # two micro-batches, values 0: with gamma = lam = 1 each trainable token's advantage is the return
    rewards = [torch.tensor([[0, 1.0, 0]]), torch.tensor([[0, 3.0]])]
    masks = [torch.tensor([[1, 1, 0.0]]), torch.tensor([[0, 1.0]])]
    values = [torch.zeros(1, 3), torch.zeros(1, 2)]
    out = ppo.advantages(rewards, values, masks)
    # raw advantages 1, 1, 3: mean 5/3, population std sqrt(8/9)
    std = math.sqrt(8 / 9) + 1e-6
    torch.testing.assert_close(out[0][0], torch.tensor([[-2 / 3 / std, -2 / 3 / std, 0]]))
    torch.testing.assert_close(out[1][0], torch.tensor([[0, 4 / 3 / std]]))
    torch.testing.assert_close(out[0][1], torch.tensor([[1.0, 1.0, 0]]))  # value targets: A + V (unwhitened)
    # several processes holding the same batches: the statistics are the same
    doubled = ppo.advantages(rewards, values, masks, all_sum=lambda x: 2 * x)
    torch.testing.assert_close(doubled[0][0], out[0][0])


def test_the_algorithm_table():
    from agentgym.trainers.config import AlgorithmConfig

    assert set(alg.ALGORITHMS) == {"ppo", "grpo", "drgrpo"}
    ppo = alg.make_algorithm(AlgorithmConfig(name="ppo", gamma=0.9, lam=0.8, norm_eps=1e-3))
    assert isinstance(ppo, alg.PPO) and ppo.needs_critic and (ppo.gamma, ppo.lam, ppo.eps) == (0.9, 0.8, 1e-3)
    grpo = alg.make_algorithm(AlgorithmConfig(name="grpo", norm_eps=1e-4))
    assert isinstance(grpo, alg.GRPO) and not grpo.needs_critic and grpo.eps == 1e-4
    assert type(alg.make_algorithm(AlgorithmConfig(name="drgrpo"))) is alg.DrGRPO
    with pytest.raises(ValueError, match="algorithm.name"):
        alg.make_algorithm(AlgorithmConfig(name="reinforce"))


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
