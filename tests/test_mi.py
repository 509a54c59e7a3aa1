"""Mutual information (RAGEN-2): hand-computed cases, column dedupe, the EMA z-score, reasoning splits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agentgym.eval import MutualInformationEMA, mutual_information
from agentgym.eval.diagnostics import TurnSample, mi_from_turns, sample_turns, split_reasoning


def test_perfectly_input_dependent_gives_log_n_and_full_retrieval():
    n = 6
    logp = np.full((n, n), -np.inf)
    np.fill_diagonal(logp, 0.0)  # each reasoning is certain under its own prompt, impossible elsewhere
    m = mutual_information(logp, range(n))
    assert m["mi"] == pytest.approx(math.log(n))
    assert m["mi_upper_bound"] == pytest.approx(math.log(n))
    assert m["retrieval_acc"] == 1.0 and m["retrieval_chance"] == pytest.approx(1 / n)
    assert m["conditional_entropy"] == pytest.approx(0.0)
    assert m["marginal_entropy"] == pytest.approx(math.log(n))


def test_input_agnostic_gives_zero_mi_and_chance_retrieval():
    rng = np.random.default_rng(0)
    n, per_prompt = 8, 4
    owner = np.repeat(np.arange(n), per_prompt)
    row = rng.normal(-30.0, 5.0, size=(len(owner), 1))
    logp = np.repeat(row, n, axis=1)  # every reasoning is as likely under every prompt
    m = mutual_information(logp, owner)
    assert m["mi"] == pytest.approx(0.0, abs=1e-12)
    assert m["mi_zscore"] == pytest.approx(0.0, abs=1e-9)
    assert m["retrieval_acc"] == pytest.approx(1 / n)
    assert m["conditional_entropy"] == pytest.approx(m["marginal_entropy"])


def test_hand_computed_two_by_two():
    # z0 from x0, z1 from x1; p(z0|x0)=0.5, p(z0|x1)=0.1, p(z1|x0)=0.2, p(z1|x1)=0.4
    p = np.array([[0.5, 0.1], [0.2, 0.4]])
    m = mutual_information(np.log(p), [0, 1])
    matched = np.log([0.5, 0.4])
    marginal = np.log([(0.5 + 0.1) / 2, (0.2 + 0.4) / 2])
    assert m["mi"] == pytest.approx(matched.mean() - marginal.mean())
    assert m["conditional_entropy"] == pytest.approx(-matched.mean())
    assert m["marginal_entropy"] == pytest.approx(-marginal.mean())
    assert m["retrieval_acc"] == 1.0
    std = marginal.std()
    assert m["marginal_std"] == pytest.approx(std)
    assert m["mi_zscore"] == pytest.approx(((matched - marginal) / (std + 1e-3)).mean())


def test_identical_prompts_count_as_one_column():
    # prompts 0 and 2 are the same text: their columns are equal and must merge into one
    logp = np.log(
        np.array(
            [
                [0.6, 0.1, 0.6],
                [0.1, 0.7, 0.1],
                [0.5, 0.2, 0.5],
            ]
        )
    )
    merged = mutual_information(logp, [0, 1, 2], prompts=["a", "b", "a"])
    reference = mutual_information(logp[:, :2], [0, 1, 0])
    assert merged == reference
    assert merged["n_prompts"] == 2 and merged["retrieval_acc"] == 1.0
    unmerged = mutual_information(logp, [0, 1, 2])
    assert unmerged["retrieval_acc"] < 1.0  # sample 2 is "retrieved" as its twin prompt 0


def test_ema_zscore_smooths_the_std():
    rng = np.random.default_rng(1)
    tracker = MutualInformationEMA(decay=0.9)
    first = rng.normal(size=(8, 4))
    m1 = tracker.update(first, [0, 1, 2, 3] * 2)
    assert m1["mi_zscore_ema"] == pytest.approx(m1["mi_zscore"])  # first call: the EMA is the batch std
    second = rng.normal(scale=3.0, size=(8, 4))
    m2 = tracker.update(second, [0, 1, 2, 3] * 2)
    expected_std = 0.9 * m1["marginal_std"] + 0.1 * m2["marginal_std"]
    assert tracker.marginal_std == pytest.approx(expected_std)
    assert m2["marginal_std_ema"] == pytest.approx(expected_std)
    own = mutual_information(second, [0, 1, 2, 3] * 2, marginal_std=expected_std)
    assert m2["mi_zscore_ema"] == pytest.approx(own["mi_zscore"])


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        mutual_information(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError):
        mutual_information(np.zeros((2, 2)), [0, 2])
    with pytest.raises(ValueError):
        mutual_information(np.full((2, 2), -np.inf), [0, 1])


def test_split_reasoning_takes_the_content_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    text = "<think>The goal is down and right.</think><answer>Down</answer>"
    ids = tok.encode(text) + [tok.eos_token_id]
    opener, reasoning = split_reasoning(tok, ids)
    assert "<think>" in tok.decode(opener)
    assert tok.decode(reasoning).strip() in "The goal is down and right."
    assert "goal is down and right" in tok.decode(reasoning)
    assert "<" not in tok.decode(reasoning) and ">" not in tok.decode(reasoning)
    assert split_reasoning(tok, tok.encode("<answer>Down</answer>")) is None
    assert split_reasoning(tok, tok.encode("<think>never closed")) is None


def test_sampling_modes():
    counts = [3, 1, 0, 2]
    assert sample_turns(counts, "first_turn") == [(0, 0), (1, 0), (3, 0)]
    assert sample_turns(counts, "turn") == [(0, 0), (0, 1), (0, 2), (1, 0), (3, 0), (3, 1)]
    drawn = sample_turns(counts, "trajectory", num_samples=200, seed=3)
    assert len(drawn) == 200 and all(e != 2 and t < counts[e] for e, t in drawn)
    by_episode = np.bincount([e for e, _ in drawn], minlength=4)
    assert by_episode[1] > 40  # episodes are drawn uniformly, whatever their length
    assert sample_turns(counts, "trajectory", 5, seed=3) == sample_turns(counts, "trajectory", 5, seed=3)
    with pytest.raises(ValueError):
        sample_turns(counts, "nope")


def test_mi_from_turns_on_a_model(tiny_lm):
    model, tok = tiny_lm
    prompts = [tok.encode(f"<|user|>\nboard {k} " * 3) for k in range(4)]
    replies = [
        tok.encode(f"<think>move number {k}</think><answer>Up</answer>") + [tok.eos_token_id]
        for k in range(4)
    ]
    turns = [TurnSample(p, r) for p, r in zip(prompts, replies, strict=True)]
    turns.append(TurnSample(prompts[0], tok.encode("<answer>Up</answer>")))  # no think block
    turns.append(TurnSample(prompts[1], replies[3]))  # a repeated prompt: still four columns
    m = mi_from_turns(model, tok, turns)
    assert m["n_prompts"] == 4 and m["n_samples"] == 5
    assert m["valid_thinking_rate"] == pytest.approx(5 / 6)
    assert math.isfinite(m["mi"]) and m["mi"] <= math.log(4) + 1e-9  # an estimate: it may dip below 0
    assert m["reasoning_entropy"] > 0
    for key in ("mi_seq", "conditional_entropy_seq", "retrieval_acc", "retrieval_chance", "mi_zscore"):
        assert key in m
    too_few = mi_from_turns(model, tok, turns[:1])
    assert "mi" not in too_few and too_few["n_prompts"] == 1


def test_turns_from_token_transcript():
    from agentgym.eval.diagnostics import turns_from_token_transcript

    ids = [1, 2, 3, 10, 11, 4, 5, 12, 13, 14]
    mask = [0, 0, 0, 1, 1, 0, 0, 1, 1, 1]
    turns = turns_from_token_transcript(ids, mask, [4, 9])
    assert [t.prompt_ids for t in turns] == [[1, 2, 3], [1, 2, 3, 10, 11, 4, 5]]
    assert [t.response_ids for t in turns] == [[10, 11], [12, 13, 14]]


def test_token_exact_episodes_are_scored_in_one_pass_with_the_same_numbers(tiny_lm):
    from agentgym.eval.diagnostics import own_prompt_scores
    from agentgym.eval.scoring import score_pairs

    model, tok = tiny_lm
    rng = np.random.default_rng(5)

    def ids(n):
        return [int(x) for x in rng.integers(5, len(tok) - 1, size=n)]

    p0, r0, obs, r1 = ids(30), ids(6), ids(9), ids(4)
    exact = [TurnSample(p0, r0), TurnSample(p0 + r0 + obs, r1)]
    retokenized = [TurnSample(p0, r0), TurnSample(p0 + r0[:-1] + obs, r1)]  # not a prefix: per turn
    got = own_prompt_scores(model, [exact, retokenized], None, 0, [3, 4], pad_id=tok.pad_token_id)
    assert len(got) == 4
    for turn, score in got:
        ref = score_pairs(
            model,
            [turn.prompt_ids],
            [turn.response_ids],
            [(0, 0)],
            with_entropy=True,
            probe_ids=[3, 4],
            pad_id=tok.pad_token_id,
        )[(0, 0)]
        np.testing.assert_allclose(score.logprobs, ref.logprobs, atol=1e-5)
        np.testing.assert_allclose(score.entropy, ref.entropy, atol=1e-5)
        np.testing.assert_allclose(score.probe_probs, ref.probe_probs, atol=1e-5)
    few = own_prompt_scores(model, [exact, retokenized], 2, 0, None, pad_id=tok.pad_token_id)
    assert len(few) == 2  # whole episodes within the turn budget


def test_cost_share_bounds_the_scored_tokens(tiny_lm):
    """With ``cost_share`` each part of the diagnostics scores at most its share of the tokens the
    episodes took to play: fewer MI samples and own-pass turns, the draws recorded in the result."""
    from agentgym.eval.diagnostics import mi_tokens, played_tokens, score_batch
    from agentgym.policies import shared_prefix_length

    model, tok = tiny_lm
    rng = np.random.default_rng(7)
    head = tok.encode("<|system|>\nYou are on a frozen lake. Reach the goal. " * 2)
    episodes = []
    for e in range(12):
        prompt = head + tok.encode(f"<|user|>\nboard {e} " + "F" * int(rng.integers(1, 6)))
        turns = []
        for t in range(2):
            reply = tok.encode(f"<think>step {e} {t} go</think><answer>Up</answer>") + [tok.eos_token_id]
            turns.append(TurnSample(list(prompt), reply))
            prompt = prompt + reply + tok.encode(f"<|user|>\nturn {t + 2}")
        episodes.append(turns)
    free = score_batch(model, tok, episodes, max_samples=16, pad_id=tok.pad_token_id)
    assert "budget" not in free and free["mi"]["trajectory"]["samples_drawn"] == 16 and free["turns"] == 24
    bounded = score_batch(model, tok, episodes, max_samples=16, cost_share=1.0, pad_id=tok.pad_token_id)
    budget = bounded["budget"]
    assert budget["played_tokens"] == played_tokens(episodes)
    assert budget["tokens_per_part"] == pytest.approx(budget["played_tokens"] / 3)
    shared = shared_prefix_length([t.prompt_ids for e in episodes for t in e])
    assert shared >= len(head)
    counts = [len(e) for e in episodes]
    for mode in ("first_turn", "trajectory"):
        drawn = bounded["mi"][mode]["samples_drawn"]
        assert 2 < drawn < free["mi"][mode]["samples_drawn"]
        picked = [episodes[e][t] for e, t in sample_turns(counts, mode, drawn, 0)]
        assert mi_tokens(tok, picked, "think", shared) <= budget["tokens_per_part"]
    assert 1 <= bounded["turns"] < free["turns"]
