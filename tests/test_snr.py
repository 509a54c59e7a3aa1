"""SNR-aware filtering (RAGEN-2) on hand-made groups: every strategy, metric and edge case."""

from __future__ import annotations

import numpy as np
import pytest

from agentgym.trainers import filter_stats, group_scores, snr_filter

# std per group: 0.5, 0, 1.0, 0.25, 0  (population std of two-value groups is half the gap)
RETURNS = np.array(
    [
        [0.0, 1.0, 0.0, 1.0],
        [1.0, 1.0, 1.0, 1.0],
        [-1.0, 1.0, -1.0, 1.0],
        [0.0, 0.5, 0.0, 0.5],
        [0.0, 0.0, 0.0, 0.0],
    ]
)


def test_scores_std_and_var():
    np.testing.assert_allclose(group_scores(RETURNS, "std"), [0.5, 0, 1.0, 0.25, 0])
    np.testing.assert_allclose(group_scores(RETURNS, "var"), [0.25, 0, 1.0, 0.0625, 0])
    with pytest.raises(ValueError):
        group_scores(RETURNS, "mad")
    with pytest.raises(ValueError):
        group_scores(np.zeros(4))


def test_no_filtering_keeps_everything():
    assert snr_filter(RETURNS, "top_p", 1.0, include_zero=True) == [0, 1, 2, 3, 4]


def test_zero_spread_groups_are_dropped_without_include_zero():
    assert snr_filter(RETURNS, "top_p", 1.0, include_zero=False) == [0, 2, 3]


def test_linear_top_p_keeps_smallest_prefix_reaching_p_of_total():
    # sorted scores 1.0, 0.5, 0.25 (total 1.75): 0.5 x 1.75 = 0.875 -> group 2 alone
    assert snr_filter(RETURNS, "top_p", 0.5) == [2]
    # 0.8 x 1.75 = 1.4 -> 1.0 + 0.5 = 1.5 reaches it
    assert snr_filter(RETURNS, "top_p", 0.8) == [0, 2]
    # 0.9 x 1.75 = 1.575 -> needs all three
    assert snr_filter(RETURNS, "top_p", 0.9) == [0, 2, 3]
    # exactly reaching the threshold counts: 1.5 / 1.75
    assert snr_filter(RETURNS, "top_p", 1.5 / 1.75) == [0, 2]


def test_linear_top_p_with_var_metric():
    # variances 1.0, 0.25, 0.0625 (total 1.3125): 0.9 x total = 1.18 -> 1.0 + 0.25 suffices
    assert snr_filter(RETURNS, "top_p", 0.9, metric="var") == [0, 2]


def test_softmax_top_p():
    # softmax over the std scores [1.0, 0.5, 0.25] -> about [0.48, 0.29, 0.23]
    assert snr_filter(RETURNS, "top_p", 0.4, prob_mode="softmax") == [2]
    assert snr_filter(RETURNS, "top_p", 0.7, prob_mode="softmax") == [0, 2]
    assert snr_filter(RETURNS, "top_p", 0.9, prob_mode="softmax") == [0, 2, 3]
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
    flat = np.ones((3, 4))
    assert snr_filter(flat, "top_p", 0.9) == []
    assert snr_filter(flat, "top_p", 1.0, include_zero=True) == [0, 1, 2]


def test_unknown_strategy():
    with pytest.raises(ValueError):
        snr_filter(RETURNS, "bottom_p", 0.5)


def test_filter_stats():
    stats = filter_stats(RETURNS, [0, 2])
    assert stats["kept_ratio"] == pytest.approx(0.4)
    assert stats["in_group_reward_std"] == pytest.approx(np.mean([0.5, 0, 1.0, 0.25, 0]))
    assert stats["kept_in_group_reward_std"] == pytest.approx(0.75)
    assert stats["zero_spread_ratio"] == pytest.approx(0.4)


def test_advantage_scaling_by_kept_ratio():
    from agentgym.trainers.snr import kept_ratio_scale

    assert kept_ratio_scale(0.25, "none") == 1.0
    assert kept_ratio_scale(0.25, "linear") == 0.25
    assert kept_ratio_scale(0.25, "sqrt") == pytest.approx(0.5)
    with pytest.raises(ValueError):
        kept_ratio_scale(0.25, "cube")
