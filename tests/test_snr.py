"""SNR-aware filtering (RAGEN-2): hand-made groups for every strategy and edge case, and random cases
against an independent reference written from RAGEN's rule (ragen/trainer/rollout_filter.py,
mll-lab-nu/RAGEN@20daedc): unbiased std, linear threshold value x sum - eps, softmax nucleus, top-k."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from agentgym.trainers import filter_stats, group_scores, snr_filter
from agentgym.trainers.snr import kept_ratio_scale

# population std per group: 0.5, 0, 1.0, 0.25, 0 (half the gap of a two-value group);
# the unbiased std is that x sqrt(4/3)
RETURNS = np.array(
    [
        [0.0, 1.0, 0.0, 1.0],
        [1.0, 1.0, 1.0, 1.0],
        [-1.0, 1.0, -1.0, 1.0],
        [0.0, 0.5, 0.0, 0.5],
        [0.0, 0.0, 0.0, 0.0],
    ]
)
POPULATION_STD = np.array([0.5, 0, 1.0, 0.25, 0])
UNBIASED = np.sqrt(4 / 3)


def test_scores_std_and_var_with_both_ddofs():
    np.testing.assert_allclose(group_scores(RETURNS), POPULATION_STD * UNBIASED)  # RAGEN: unbiased
    np.testing.assert_allclose(group_scores(RETURNS, "std", ddof=0), POPULATION_STD)
    np.testing.assert_allclose(group_scores(RETURNS, "var", ddof=0), POPULATION_STD**2)
    np.testing.assert_allclose(group_scores(RETURNS, "var"), POPULATION_STD**2 * 4 / 3)


def test_scores_reject_bad_input():
    for bad in (np.zeros(4), np.zeros((2, 0)), np.array([[0.0, np.nan]]), [[0.0, np.inf]]):
        with pytest.raises(ValueError):
            group_scores(bad)
    with pytest.raises(ValueError):
        group_scores(RETURNS, "mad")
    with pytest.raises(ValueError):
        group_scores(RETURNS, ddof=2)


def test_all_equal_groups_score_exactly_zero_and_single_rollouts_have_no_spread():
    flat = np.full((3, 8), -0.7)  # -0.7 is not a binary fraction: a naive std leaves a rounding residue
    assert np.all(group_scores(flat) == 0)
    assert np.all(group_scores(np.array([[1.0], [5.0]])) == 0)  # ddof=1 needs two rollouts
    assert snr_filter(np.array([[1.0], [5.0]]), "top_p", 1.0, include_zero=False) == []


def test_mirrored_groups_score_the_same():
    # k wins of n and n - k wins of n have the same spread; in floating point they can differ by an ulp
    for n in range(2, 17):
        for k in range(1, n):
            pair = np.array([[1.0] * k + [0.0] * (n - k), [0.0] * k + [1.0] * (n - k)])
            scores = group_scores(pair * 0.3 - 0.1)
            assert scores[0] == scores[1], (n, k)


def test_no_filtering_keeps_everything():
    assert snr_filter(RETURNS, "top_p", 1.0, include_zero=True) == [0, 1, 2, 3, 4]


def test_zero_spread_groups_are_dropped_without_include_zero():
    assert snr_filter(RETURNS, "top_p", 1.0, include_zero=False) == [0, 2, 3]


def test_linear_top_p_keeps_smallest_prefix_reaching_p_of_total_minus_eps():
    # unbiased scores 1.0 c, 0.5 c, 0.25 c with c = sqrt(4/3) (total 1.75 c)
    c = UNBIASED
    assert snr_filter(RETURNS, "top_p", 0.5) == [2]
    assert snr_filter(RETURNS, "top_p", 0.8) == [0, 2]  # 0.8 x 1.75 c - 0.01 <= 1.5 c
    assert snr_filter(RETURNS, "top_p", 0.9) == [0, 2, 3]  # 0.9 x 1.75 c - 0.01 > 1.5 c
    # the slack: 1.5 c reaches a threshold up to eps above it, not more
    assert snr_filter(RETURNS, "top_p", (1.5 * c + 0.009) / (1.75 * c)) == [0, 2]
    assert snr_filter(RETURNS, "top_p", (1.5 * c + 0.011) / (1.75 * c)) == [0, 2, 3]
    assert snr_filter(RETURNS, "top_p", (1.5 * c + 0.009) / (1.75 * c), selection_eps=0.0) == [0, 2, 3]
    # exactly reaching the threshold counts
    assert snr_filter(RETURNS, "top_p", 1.5 / 1.75, selection_eps=0.0) == [0, 2]


def test_linear_top_p_population_std_without_slack_is_the_old_rule():
    assert snr_filter(RETURNS, "top_p", 0.9, ddof=0, selection_eps=0.0) == [0, 2, 3]
    # variances 1.0, 0.25, 0.0625 (total 1.3125): 0.9 x total = 1.18 -> 1.0 + 0.25 suffices
    assert snr_filter(RETURNS, "top_p", 0.9, metric="var", ddof=0, selection_eps=0.0) == [0, 2]


def test_linear_top_p_never_keeps_zero_groups_even_with_include_zero():
    assert snr_filter(RETURNS, "top_p", 0.99, include_zero=True) == [0, 2, 3]


def test_nearly_flat_groups_keep_nothing_and_warn(caplog):
    # total unbiased std about 0.0058: 0.9 x total is below the 0.01 slack -> nothing kept (RAGEN)
    tiny = np.array([[0.0, 0.002, 0.0, 0.002], [0.0, 0.01, 0.0, 0.0]])
    with caplog.at_level(logging.WARNING, logger="agentgym.trainers.snr"):
        assert snr_filter(tiny, "top_p", 0.9) == []
    assert "keeps no group" in caplog.text
    assert snr_filter(tiny, "top_p", 0.9, selection_eps=0.0) == [0, 1]
    assert snr_filter(tiny, "top_p", 1.0) == [0, 1]  # value 1 keeps every candidate, no threshold


def test_unreachable_threshold_keeps_nothing_and_warns(caplog):
    # a negative slack raises the threshold above the total score: RAGEN returns no group at all
    with caplog.at_level(logging.WARNING, logger="agentgym.trainers.snr"):
        assert snr_filter(RETURNS, "top_p", 0.9, selection_eps=-1.0) == []
    assert "above the summed positive scores" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="agentgym.trainers.snr"):
        assert snr_filter(RETURNS, "top_p", 0.9) == [0, 2, 3]
    assert caplog.text == ""


def test_softmax_top_p():
    # softmax over the unbiased std scores [1.155, 0.577, 0.289] -> about [0.51, 0.28, 0.21]
    assert snr_filter(RETURNS, "top_p", 0.4, prob_mode="softmax") == [2]
    assert snr_filter(RETURNS, "top_p", 0.7, prob_mode="softmax") == [0, 2]
    assert snr_filter(RETURNS, "top_p", 0.9, prob_mode="softmax") == [0, 2, 3]
    # zero groups as candidates take probability mass too (about 0.12 each): 0.8 needs one of them, the
    # first by index
    assert snr_filter(RETURNS, "top_p", 0.8, include_zero=True, prob_mode="softmax") == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        snr_filter(RETURNS, "top_p", 0.9, prob_mode="cubic")


def test_top_k_fraction_of_all_groups():
    assert snr_filter(RETURNS, "top_k", 0.4, include_zero=True) == [0, 2]  # int(0.4 x 5) = 2
    assert snr_filter(RETURNS, "top_k", 0.1, include_zero=True) == [2]  # at least one
    assert snr_filter(RETURNS, "top_k", 1.0, include_zero=False) == [0, 2, 3]  # only candidates
    with pytest.raises(ValueError):
        snr_filter(RETURNS, "top_k", 2)


def test_top_k_abs():
    assert snr_filter(RETURNS, "top_k_abs", 1) == [2]
    assert snr_filter(RETURNS, "top_k_abs", 2) == [0, 2]
    assert snr_filter(RETURNS, "top_k_abs", 10, include_zero=True) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        snr_filter(RETURNS, "top_k_abs", 0)


def test_ties_are_broken_by_index_and_all_equal_groups_are_empty():
    tied = np.array([[0, 1], [0, 1], [0, 1]], dtype=float)
    assert snr_filter(tied, "top_k_abs", 2) == [0, 1]
    mirrored = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 1], [1, 0, 0]], dtype=float)
    assert snr_filter(mirrored, "top_k_abs", 2) == [0, 2]
    assert snr_filter(mirrored, "top_p", 0.3, prob_mode="softmax") == [0]  # three ties of 1/3 each
    assert snr_filter(mirrored, "top_p", 0.5, prob_mode="softmax") == [0, 2]
    flat = np.ones((3, 4))
    assert snr_filter(flat, "top_p", 0.9) == []
    assert snr_filter(flat, "top_p", 1.0, include_zero=True) == [0, 1, 2]


def test_bad_options():
    for strategy, value in (("bottom_p", 0.5), ("top_p", 0.0), ("top_p", -1.0)):
        with pytest.raises(ValueError):
            snr_filter(RETURNS, strategy, value)


def test_filter_stats():
    stats = filter_stats(RETURNS, [0, 2])
    assert stats["kept_ratio"] == pytest.approx(0.4)
    assert stats["in_group_reward_std"] == pytest.approx(np.mean(POPULATION_STD) * UNBIASED)
    assert stats["kept_in_group_reward_std"] == pytest.approx(0.75 * UNBIASED)
    assert stats["zero_spread_ratio"] == pytest.approx(0.4)
    assert filter_stats(RETURNS, [0, 2], ddof=0)["kept_in_group_reward_std"] == pytest.approx(0.75)
    assert filter_stats(np.zeros((0, 4)), [])["kept_ratio"] == 0.0


def test_advantage_scaling_by_kept_ratio():
    assert kept_ratio_scale(0.25, "none") == 1.0
    assert kept_ratio_scale(0.25, "linear") == 0.25
    assert kept_ratio_scale(0.25, "sqrt") == pytest.approx(0.5)
    with pytest.raises(ValueError):
        kept_ratio_scale(0.25, "cube")


# --- random cases against a reference written from RAGEN's rule -------------------------------------


def ragen_rule(
    returns: np.ndarray,
    strategy: str,
    value: float,
    include_zero: bool,
    prob_mode: str = "linear",
    selection_eps: float = 0.01,
) -> list[int]:
    """RAGEN's selection, written plainly: torch's (unbiased) std, then sorted cumulative sums.

    Scores are compared to 9 decimals so that equal spreads tie exactly and rank by group index (RAGEN's
    own sorts are unstable: its order among ties is unspecified), and a sum that reaches its threshold up
    to rounding reaches it (at such exact boundaries RAGEN's float32 result is rounding noise)."""
    torch = pytest.importorskip("torch")
    std = torch.tensor(returns, dtype=torch.float64).std(dim=1).tolist()
    scores = {g: round(s, 9) for g, s in enumerate(std) if include_zero or abs(s) > 1e-10}
    ranked = sorted(scores, key=lambda g: (-scores[g], g))  # best first, ties by index
    if not ranked:
        return []
    if strategy == "top_p" and value >= 1:
        keep = len(ranked)
    elif strategy == "top_p" and prob_mode == "softmax":
        probs = torch.softmax(torch.tensor([scores[g] for g in ranked], dtype=torch.float64), dim=0)
        reached = (torch.cumsum(probs, 0) >= value - 1e-9).nonzero().flatten().tolist()  # up to rounding
        keep = reached[0] + 1 if reached else len(ranked)
    elif strategy == "top_p":
        threshold = value * sum(scores.values()) - selection_eps
        positive = [scores[g] for g in ranked if scores[g] > 0]
        prefix_sums = np.concatenate([[0.0], np.cumsum(positive)])
        reaching = np.flatnonzero(prefix_sums >= threshold - 1e-9)  # up to rounding
        if len(reaching) == 0:
            return []
        keep = int(reaching[0])
    else:
        k = int(value * len(returns)) if strategy == "top_k" else int(value)
        keep = max(1, min(k, len(ranked)))
    return sorted(ranked[:keep])


def random_case(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Groups of returns like those of the envs (many ties, flat groups) plus continuous ones."""
    groups, size = int(rng.integers(1, 17)), int(rng.integers(2, 17))
    kind = int(rng.integers(4))
    if kind == 0:  # success or failure: most groups tie with another one
        p = rng.choice([0.0, 1.0, rng.random()], size=(groups, 1), p=[0.25, 0.25, 0.5])
        returns = (rng.random((groups, size)) < p).astype(float)
    elif kind == 1:  # Sokoban-like: +10 when solved, -0.1 per step, some groups all alike
        solved = rng.random((groups, size)) < rng.random((groups, 1))
        returns = np.where(solved, 10.0, 0.0) - 0.1 * rng.integers(1, 11, (groups, size))
        alike = rng.random(groups) < 0.3
        returns[alike] = returns[alike, :1]
    elif kind == 2:  # continuous returns on scales from 1e-3 to 10, some groups flat
        returns = rng.normal(size=(groups, size)) * 10.0 ** rng.uniform(-3, 1, (groups, 1))
        flat = rng.random(groups) < 0.3
        returns[flat] = returns[flat, :1]
    else:  # a few small distinct values: spreads near the 0.01 slack
        returns = rng.integers(0, 3, (groups, size)) * rng.choice([0.001, 0.01, 0.1, 1.0])
    value = float(rng.choice([rng.uniform(0.05, 0.99), 0.9, 0.5, 0.25, 1.0]))
    return returns, value


MODES = [
    ("top_p", "linear", False),
    ("top_p", "linear", True),
    ("top_p", "softmax", False),
    ("top_p", "softmax", True),
    ("top_k", "linear", False),
    ("top_k", "linear", True),
    ("top_k_abs", "linear", False),
    ("top_k_abs", "linear", True),
]


@pytest.mark.parametrize("strategy,prob_mode,include_zero", MODES)
def test_defaults_follow_ragen_rule_on_random_cases(strategy, prob_mode, include_zero):
    rng = np.random.default_rng(MODES.index((strategy, prob_mode, include_zero)))
    emptied = 0
    for _ in range(1500):
        returns, value = random_case(rng)
        if strategy == "top_k_abs":
            value = float(rng.integers(1, 9))
        if strategy == "top_k":
            value = min(value, 1.0)
        expected = ragen_rule(returns, strategy, value, include_zero, prob_mode)
        assert snr_filter(returns, strategy, value, include_zero, prob_mode=prob_mode) == expected, (
            returns,
            value,
        )
        emptied += not expected and bool(np.any(np.ptp(returns, axis=1) > 0))
    if (strategy, prob_mode) == ("top_p", "linear"):
        assert emptied > 0  # the cases reach the "nearly flat: keep nothing" branch


@pytest.mark.parametrize("selection_eps", [0.0, 0.05, -0.2, -5.0])
def test_linear_top_p_follows_ragen_rule_for_any_slack(selection_eps):
    rng = np.random.default_rng(int(selection_eps * 100) + 1000)
    for _ in range(800):
        returns, value = random_case(rng)
        include_zero = bool(rng.integers(2))
        expected = ragen_rule(returns, "top_p", value, include_zero, selection_eps=selection_eps)
        kept = snr_filter(returns, "top_p", value, include_zero, selection_eps=selection_eps)
        assert kept == expected, (returns, value, include_zero)
