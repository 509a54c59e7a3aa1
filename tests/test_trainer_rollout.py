"""Token-exact rollouts: exact ids and log-probs, observation deltas, masks, gradients, accumulation."""

from __future__ import annotations

import copy

import pytest
import torch
from trainer_fixtures import FROZENLAKE, pad_eos_gpt2, tiny_config

from agentgym.trainers.algorithms import token_logprobs
from agentgym.trainers.transcripts import (
    ExpertTokenPolicy,
    TokenExactPolicy,
    Transcript,
    make_batch,
    model_logits,
    observation_ids,
    play,
)


@pytest.fixture(scope="module")
def gpt2_pad_eos():
    return pad_eos_gpt2()


@pytest.fixture(params=["llama", "gpt2"])
def any_lm(request, tiny_lm, gpt2_pad_eos):
    return tiny_lm if request.param == "llama" else gpt2_pad_eos


class RecordingPolicy(TokenExactPolicy):
    """Remembers the exact prompts it generated from."""

    def generate(self, prompts, seeds=None):
        self.seen = getattr(self, "seen", []) + [[list(p) for p in prompts]]
        return super().generate(prompts, seeds)


def test_generation_logprobs_equal_recomputed_ones_on_left_padded_batches(any_lm):
    model, tokenizer = any_lm
    policy = TokenExactPolicy(copy.deepcopy(model), tokenizer, temperature=0.8, max_new_tokens=10, seed=3)
    transcripts = play(FROZENLAKE, [5, 6, 7], 2, policy, batch_size=6)
    assert [(t.group, t.seed) for t in transcripts] == [(0, 5), (0, 5), (1, 6), (1, 6), (2, 7), (2, 7)]
    lengths = {len(t.ids) for t in transcripts}
    batch = make_batch(transcripts, tokenizer.pad_token_id)
    assert batch.attention_mask.shape[1] == max(lengths)
    with torch.no_grad():
        logp, _ = token_logprobs(model_logits(policy.model, batch), batch.targets, temperature=0.8)
    mask = batch.loss_mask.bool()
    assert mask.sum() == sum(t.generated_tokens for t in transcripts)
    torch.testing.assert_close(logp[mask], batch.sampler_logprobs[mask], atol=2e-4, rtol=0)
    # the episodes are of different lengths, so this batch really is padded
    assert len({len(t.ids) for t in transcripts}) > 1 and (batch.attention_mask == 0).any()
    # on the right: every row attends from its first column, so no query row is fully masked
    assert (batch.attention_mask[:, 0] == 1).all()


def test_turns_are_appended_token_by_token_never_retokenized(tiny_lm):
    model, tokenizer = tiny_lm
    policy = RecordingPolicy(copy.deepcopy(model), tokenizer, temperature=1.0, max_new_tokens=8, seed=0)
    [transcript] = play(FROZENLAKE, [11], 1, policy)
    assert len(policy.seen) == len(transcript.turn_ends) >= 2  # a random model plays every turn
    for turn, prompts in enumerate(policy.seen):
        prompt = prompts[0]
        assert transcript.ids[: len(prompt)] == prompt  # each turn's prompt is a prefix of the transcript
        if turn:
            previous_end = transcript.turn_ends[turn - 1]
            # the generated ids of the previous turn sit unchanged right before the new observation
            assert prompt[: previous_end + 1] == transcript.ids[: previous_end + 1]
            assert not any(transcript.mask[previous_end + 1 : len(prompt)])  # the observation is not trained
    # generated tokens and only them are masked in; their count matches the sampled ids
    assert sum(transcript.mask) == sum(len(ids) for ids in _turn_ids(transcript))
    assert len(transcript.sampler_logprobs) == len(transcript.ids)


def _turn_ids(transcript: Transcript):
    spans, current = [], []
    for token, m in zip(transcript.ids, transcript.mask, strict=True):
        if m:
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    return spans + ([current] if current else [])


def test_observation_is_the_template_delta_tokenized_alone(tiny_lm):
    _, tokenizer = tiny_lm
    chat = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Turn 1:\nP_G"},
        {"role": "assistant", "content": "<answer>Right</answer>"},
        {"role": "user", "content": "Turn 2:\n_PG"},
    ]
    ended = observation_ids(tokenizer, chat, response_ended=True)
    assert tokenizer.decode(ended) == "\n<|user|>\nTurn 2:\n_PG<|endoftext|>\n<|assistant|>\n"
    cut = observation_ids(tokenizer, chat, response_ended=False)  # a response cut at max_new_tokens
    assert cut[0] == tokenizer.eos_token_id and cut[1:] == ended


def test_expert_transcript_decodes_to_the_chat_template_rendering(tiny_lm):
    _, tokenizer = tiny_lm
    policy = ExpertTokenPolicy(tokenizer)
    [transcript] = play(FROZENLAKE, [3], 1, policy)
    assert transcript.success and transcript.episode_return == 1.0
    eos = [i for i, t in enumerate(transcript.ids) if t == tokenizer.eos_token_id and transcript.mask[i]]
    assert eos == transcript.turn_ends  # every turn ends with a trained end-of-turn token
    # with this template the token-exact layout renders exactly like the whole chat would
    text = tokenizer.decode(transcript.ids)
    assert text.startswith("<|system|>") and text.endswith("</answer><|endoftext|>")
    assert text.count("<|assistant|>") == len(transcript.turn_ends)


def test_end_of_turn_is_trained_when_pad_is_eos(gpt2_pad_eos):
    model, tokenizer = gpt2_pad_eos
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    [short] = play(FROZENLAKE, [3], 1, ExpertTokenPolicy(tokenizer))
    long = copy.deepcopy(short)
    long.extend([tokenizer.eos_token_id] * 5, trained=False)  # a longer row makes `short` padded
    batch = make_batch([short, long], tokenizer.pad_token_id)
    length = len(short.ids)
    # loss-mask column j is about the token at position batch.start + j + 1
    eos_columns = [e - 1 - batch.start for e in short.turn_ends]
    assert all(batch.loss_mask[0, j] == 1 for j in eos_columns)
    assert batch.targets[0, eos_columns[-1]] == tokenizer.eos_token_id
    trained = batch.loss_mask[0].nonzero().flatten() + batch.start + 1
    assert trained.max() < length  # the pad (== eos) tokens after the transcript are not trained
    assert batch.attention_mask[0, length:].sum() == 0 and batch.attention_mask[0, :length].all()


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from agentgym.trainers.trainer import Trainer

    trainer = Trainer(tiny_config(tmp_path_factory.mktemp("run"), algorithm={"micro_batch_size": 2}))
    yield trainer
    trainer.close()


@pytest.fixture(scope="module")
def rollouts(trainer):
    trainer.sampler.reseed(0)
    with torch.no_grad():
        return play(FROZENLAKE, [1, 2], 3, trainer.sampler)


def _lm_head_grads(trainer, transcripts):
    """d loss / d logits of each micro-batch of one update (captured on the output layer)."""
    captured = []
    head = trainer.model.get_output_embeddings()

    def keep(module, inputs, out):  # returns None, so the output is left as it is
        out.retain_grad()
        captured.append(out)

    handle = head.register_forward_hook(keep)
    try:
        prepared = trainer.prepare(transcripts)
        total = sum(p.tokens for p in prepared)
        for p in prepared:
            trainer.policy_backward(p, total, entropy_grad=True)
    finally:
        handle.remove()
    grads = {n: q.grad.clone() for n, q in trainer.model.named_parameters() if q.grad is not None}
    trainer.optimizer.zero_grad(set_to_none=True)
    return prepared, [c.grad for c in captured], grads


def _returns_table(transcripts, groups, size):
    import numpy as np

    table = np.zeros((groups, size))
    count = [0] * groups
    for t in transcripts:
        table[t.group, count[t.group]] = t.episode_return
        count[t.group] += 1
    return table


def test_observation_and_pad_tokens_get_zero_gradient(trainer, rollouts):
    for i, t in enumerate(rollouts):  # make every group informative
        t.rewards = [float(i % 2)]
    prepared, logit_grads, _ = _lm_head_grads(trainer, rollouts)
    checked = 0
    for p, grad in zip(prepared, logit_grads, strict=True):
        norms = grad[:, :-1].norm(dim=-1)  # position t predicts target t + 1
        mask = p.batch.loss_mask
        assert torch.all(norms[mask == 0] == 0)  # prompt, observation and pad positions
        assert (norms[mask == 1] > 0).float().mean() > 0.5  # generated ones do move (zero advantage aside)
        checked += int((mask == 0).sum())
    assert checked > 0


def test_gradient_accumulation_equals_one_big_batch(trainer, rollouts):
    for i, t in enumerate(rollouts):
        t.rewards = [float(i % 2)]
    hp = trainer.cfg.algorithm
    hp.micro_batch_size = 2
    _, _, small = _lm_head_grads(trainer, rollouts)
    hp.micro_batch_size = 6
    prepared, _, big = _lm_head_grads(trainer, rollouts)
    hp.micro_batch_size = 2
    assert len(prepared) == 1
    for name, grad in big.items():
        torch.testing.assert_close(small[name], grad, atol=1e-6, rtol=1e-4)


def test_first_epoch_has_ratio_one_and_nothing_clipped(trainer, rollouts):
    for i, t in enumerate(rollouts):
        t.rewards = [float(i % 2)]
    trainer.cfg.algorithm.ppo_epochs = 2  # old log-probs are recomputed before the update
    try:
        prepared = trainer.prepare(rollouts)
        assert all(p.old_logp is not None for p in prepared)
        total = sum(p.tokens for p in prepared)
        stats = [trainer.policy_backward(p, total, entropy_grad=False) for p in prepared]
    finally:
        trainer.cfg.algorithm.ppo_epochs = 1
        trainer.optimizer.zero_grad(set_to_none=True)
    tokens = sum(s["tokens"] for s in stats)
    assert sum(s["ratio"] for s in stats) / tokens == pytest.approx(1.0, abs=1e-6)
    assert sum(s["clip_frac"] for s in stats) == 0


def test_group_with_equal_rewards_is_filtered_and_has_zero_advantage(trainer, rollouts):
    from agentgym.trainers import snr_filter

    for t in rollouts:  # group 0: every episode wins; group 1: a win and two losses
        t.rewards = [1.0]
    group1 = [t for t in rollouts if t.group == 1]
    group1[0].rewards, group1[1].rewards = [0.0], [0.0]
    returns = _returns_table(rollouts, 2, 3)
    assert snr_filter(returns=returns, strategy="top_p", value=0.9, include_zero=False) == [1]
    # the advantages the update trains on: zero on every token of group 0, the sign of the return in group 1
    prepared = trainer.prepare(rollouts)
    for p in prepared:
        for row, t in enumerate(p.transcripts):
            trained = p.advantages[row][p.batch.loss_mask[row] == 1]
            assert len(trained) == t.generated_tokens > 0
            if t.group == 0:
                assert torch.all(trained == 0)
            else:
                assert torch.all(trained > 0) if t.episode_return == 1.0 else torch.all(trained < 0)
                assert torch.allclose(trained, trained[0])  # one advantage per episode
