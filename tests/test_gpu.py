"""The trainer and the diagnostics on a CUDA GPU: rollouts, exact log-probs, a bf16 GRPO step, MI scoring.

Every test here is marked ``gpu`` and skips (with the reason) where torch sees no CUDA device, so the
suite passes on CPU machines; ``benchmarks/gpu_check.sh`` runs them on a GPU and records the results.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from trainer_fixtures import FROZENLAKE, tiny_config

from agentgym.trainers.algorithms import token_logprobs
from agentgym.trainers.transcripts import TokenExactPolicy, Transcript, make_batch, model_logits, play

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)"),
]

CUDA = "cuda"


@pytest.fixture
def cuda_lm(tiny_lm):
    """(model on the GPU in float32, tokenizer): a copy of the session's tiny Llama-style model."""
    model, tokenizer = tiny_lm
    return copy.deepcopy(model).to(CUDA).eval(), tokenizer


def test_cuda_rollouts_are_token_exact_transcripts(cuda_lm):
    model, tokenizer = cuda_lm
    policy = TokenExactPolicy(model, tokenizer, temperature=1.0, max_new_tokens=12, device=CUDA, seed=1)
    transcripts = play(FROZENLAKE, [0, 1, 2, 3], 4, policy, env_kwargs={"size": 3}, batch_size=16)
    assert len(transcripts) == 16
    for t in transcripts:
        assert len(t.ids) == len(t.mask) == len(t.sampler_logprobs) and t.generated_tokens > 0
        assert all(t.mask[end] == 1 for end in t.turn_ends)
        generated = [lp for lp, m in zip(t.sampler_logprobs, t.mask, strict=True) if m]
        assert np.isfinite(generated).all() and max(generated) <= 0
    assert next(policy.model.parameters()).device.type == CUDA


def test_generation_logprobs_equal_recomputed_ones_on_gpu(cuda_lm):
    model, tokenizer = cuda_lm
    policy = TokenExactPolicy(model, tokenizer, temperature=0.8, max_new_tokens=10, device=CUDA, seed=3)
    transcripts = play(FROZENLAKE, [5, 6, 7], 2, policy, batch_size=6)
    batch = make_batch(transcripts, tokenizer.pad_token_id).to(torch.device(CUDA))
    with torch.no_grad():
        logp, _ = token_logprobs(model_logits(model, batch), batch.targets, temperature=0.8)
    mask = batch.loss_mask.bool()
    assert mask.sum() == sum(t.generated_tokens for t in transcripts)
    # float32 on the GPU: the KV-cached decode and the full forward differ only by kernel rounding
    torch.testing.assert_close(logp[mask], batch.sampler_logprobs[mask], atol=1e-3, rtol=0)
    assert (batch.attention_mask == 0).any() or len({len(t.ids) for t in transcripts}) > 1


def _arm_probability(model, prompt: list[int], arm: int) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt], device=CUDA)).logits[0, -1].float()
    return float(torch.softmax(logits, -1)[arm])


def test_bf16_grpo_step_on_cuda_raises_the_rewarded_arm(tmp_path):
    from agentgym.trainers.trainer import Trainer

    config = tiny_config(
        tmp_path,
        model={"dtype": "bfloat16"},
        algorithm={"name": "grpo", "lr": 1e-2},
        trainer={"device": CUDA},
    )
    trainer = Trainer(config)
    try:
        assert trainer.runtime.device.type == CUDA and trainer.runtime.dtype == torch.bfloat16
        tok = trainer.tokenizer
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": "Pick an arm: Left or Right."}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
        left, right = tok.encode("Left")[0], tok.encode("Right")[0]
        transcripts = []
        for arm, reward in [(left, 1.0), (right, 0.0), (right, 0.0), (left, 1.0), (right, 0.0)]:
            t = Transcript(group=0, seed=0, rewards=[reward])
            t.extend(prompt, trained=False)
            t.extend([arm, tok.eos_token_id], trained=True, logprobs=[0.0, 0.0])
            t.turn_ends.append(len(t.ids) - 1)
            transcripts.append(t)
        before = _arm_probability(trainer.model, prompt, left)
        update = trainer.update(transcripts)
        assert _arm_probability(trainer.model, prompt, left) > before * 1.05
        assert np.isfinite(update["policy_loss"]) and np.isfinite(update["grad_norm"])
        # mixed precision: the weights (the optimizer's master copy) stay float32
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
        # and a whole RL step (rollouts on the GPU, then the bf16 update) runs and logs
        metrics = trainer.rl_step()
        assert metrics["rollout_tokens"] > 0 and np.isfinite(metrics.get("grad_norm", 0.0))
    finally:
        trainer.close()


def test_mi_scorer_on_cuda_matches_cpu(tiny_lm):
    from agentgym.eval.scoring import cross_score

    model, tokenizer = tiny_lm
    rng = np.random.default_rng(0)
    vocab = len(tokenizer)
    contexts = [list(rng.integers(10, vocab, size=n)) for n in (30, 45, 60, 38)]
    samples = [list(rng.integers(10, vocab, size=n)) for n in (5, 9, 12, 7, 3, 11, 8, 6)]
    owner = [0, 0, 1, 1, 2, 2, 3, 3]
    on_cpu = cross_score(model, contexts, samples, owner, pad_id=tokenizer.pad_token_id)
    on_gpu = cross_score(
        copy.deepcopy(model).to(CUDA), contexts, samples, owner, pad_id=tokenizer.pad_token_id
    )
    np.testing.assert_allclose(on_gpu.logp_sum, on_cpu.logp_sum, atol=2e-3, rtol=0)
    np.testing.assert_allclose(on_gpu.logp_mean, on_cpu.logp_mean, atol=2e-4, rtol=0)


def _play_greedy(policy, episodes: int = 6):
    import gymnasium as gym

    from agentgym.rollout import run_episodes

    played = run_episodes(lambda: gym.make(FROZENLAKE), FROZENLAKE, range(episodes), policy, batch_size=3)
    return sorted(played, key=lambda e: e.seed)


def test_hf_policy_cache_reuse_on_cuda_plays_the_episodes_of_whole_encoding(cuda_lm, monkeypatch):
    """The eval policy on the GPU (float32): next turns reuse the kept KV cache and decode into a static
    cache, and play the same greedy episodes as encoding every turn whole."""
    from agentgym.policies import HFPolicy

    model, tokenizer = cuda_lm
    reused = _play_greedy(HFPolicy(model, tokenizer, max_new_tokens=12, device=CUDA))
    monkeypatch.setattr(HFPolicy, "_keep", lambda self, *args: None)
    whole = _play_greedy(HFPolicy(model, tokenizer, max_new_tokens=12, device=CUDA))
    assert any(len(e.turns) > 1 for e in whole)
    for a, b in zip(reused, whole, strict=True):
        assert a.messages == b.messages
        for ta, tb in zip(a.turns, b.turns, strict=True):
            assert ta.response_ids == tb.response_ids
            assert ta.response_logprobs == pytest.approx(tb.response_logprobs, abs=1e-3)


def test_hf_policy_loads_in_bf16_on_cuda_and_samples_valid_logprobs(tiny_lm, tmp_path):
    """A model folder loaded for the GPU with no dtype given runs in bfloat16; sampled replies (a repeated
    prompt among them) carry finite log-probs."""
    from agentgym.policies import HFPolicy

    model, tokenizer = tiny_lm
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    policy = HFPolicy(str(tmp_path), temperature=1.0, max_new_tokens=16, device=CUDA)
    assert next(policy.model.parameters()).dtype == torch.bfloat16
    prompts = [[5, 6, 7, 8, 9] * 6, [5, 6, 7, 8, 9] * 6, [11, 12, 13] * 4]
    replies = policy.generate(prompts)
    assert len(replies) == 3 and all(r.token_ids for r in replies)
    for r in replies:
        assert len(r.logprobs) == len(r.token_ids)
        assert np.isfinite(r.logprobs).all() and max(r.logprobs) <= 0
