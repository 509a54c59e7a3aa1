"""SNR-aware filtering (RAGEN-2): keep the rollout groups whose returns disagree the most.

A group is the G rollouts of one prompt (same env seed). When every rollout of a group gets the same
return, a group-relative advantage is zero everywhere: the group adds noise (KL, entropy, clipping) and
compute but no signal. Each group is scored by the spread of its returns (std, or variance), and whole
groups are kept or dropped before any advantage is computed.

Strategies (``value`` means something different for each):
    top_p, prob_mode="linear"   sort by score, keep the smallest prefix whose summed score reaches
                                ``value`` x the total score (RAGEN-2's recommended rule, value 0.9)
    top_p, prob_mode="softmax"  the same over softmax(scores): nucleus selection on probability mass
    top_k                       keep the int(value x groups) best groups (a fraction, at least one)
    top_k_abs                   keep the int(value) best groups

``include_zero=False`` removes zero-spread groups before the strategy runs (they can never be kept);
``value >= 1`` with a top_p strategy keeps every candidate, so ``value=1.0, include_zero=True`` is
"no filtering".
"""

from __future__ import annotations

from typing import Any

import numpy as np

ZERO_SPREAD = 1e-8  # a group whose score is below this has (numerically) equal returns


def group_scores(returns: Any, metric: str = "std") -> np.ndarray:
    """The spread of each group's returns: population std (``metric="std"``) or variance (``"var"``)."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] < 1:
        raise ValueError(f"returns must have shape (groups, group_size), got {r.shape}")
    if metric == "std":
        return r.std(axis=1)
    if metric == "var":
        return r.var(axis=1)
    raise ValueError(f"metric must be 'std' or 'var', got {metric!r}")


def snr_filter(
    returns: Any,
    strategy: str = "top_p",
    value: float = 0.9,
    include_zero: bool = False,
    metric: str = "std",
    prob_mode: str = "linear",
) -> list[int]:
    """The sorted indices of the groups to keep; ``returns`` has shape (groups, group_size)."""
    scores = group_scores(returns, metric)
    candidates = np.arange(len(scores)) if include_zero else np.flatnonzero(scores > ZERO_SPREAD)
    if len(candidates) == 0:
        return []
    # best first; equal scores keep their original order so the result is deterministic
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    ranked = scores[order]

    if strategy == "top_p":
        if not 0 < value:
            raise ValueError(f"top_p needs value > 0, got {value}")
        if value >= 1:
            keep = len(order)
        elif prob_mode == "linear":
            keep = _prefix_reaching(ranked, value * ranked.sum())
        elif prob_mode == "softmax":
            probs = np.exp(ranked - ranked.max())
            probs /= probs.sum()
            keep = _prefix_reaching(probs, value)
        else:
            raise ValueError(f"prob_mode must be 'linear' or 'softmax', got {prob_mode!r}")
    elif strategy == "top_k":
        if not 0 < value <= 1:
            raise ValueError(f"top_k keeps a fraction of the groups: 0 < value <= 1, got {value}")
        keep = max(1, int(value * len(scores)))
    elif strategy == "top_k_abs":
        if value < 1:
            raise ValueError(f"top_k_abs keeps a number of groups: value >= 1, got {value}")
        keep = int(value)
    else:
        raise ValueError(f"strategy must be 'top_p', 'top_k' or 'top_k_abs', got {strategy!r}")
    return sorted(int(i) for i in order[:keep])


def _prefix_reaching(sorted_weights: np.ndarray, target: float) -> int:
    """The length of the shortest prefix (at least one) whose sum reaches ``target``."""
    cumulative = np.cumsum(sorted_weights)
    # a relative tolerance so that, e.g., 0.9 * total is reached when the prefix sums to it exactly
    reached = np.flatnonzero(cumulative >= target - 1e-12 * max(1.0, abs(target)))
    return int(reached[0]) + 1 if len(reached) else len(sorted_weights)


def filter_stats(returns: Any, kept: list[int], metric: str = "std") -> dict[str, float]:
    """What to log about a filtering decision: kept ratio and in-group spread before and after."""
    r = np.asarray(returns, dtype=np.float64)
    spread = r.std(axis=1)
    return {
        "kept_ratio": len(kept) / len(r) if len(r) else 0.0,
        "kept_groups": float(len(kept)),
        "in_group_reward_std": float(spread.mean()) if len(r) else 0.0,
        "kept_in_group_reward_std": float(spread[kept].mean()) if kept else 0.0,
        "zero_spread_ratio": float((spread <= ZERO_SPREAD).mean()) if len(r) else 0.0,
    }


def kept_ratio_scale(kept_ratio: float, mode: str = "none") -> float:
    """The factor advantages are multiplied by after filtering: 1, the kept ratio, or its square root."""
    if mode == "none":
        return 1.0
    if mode == "linear":
        return kept_ratio
    if mode == "sqrt":
        return float(np.sqrt(kept_ratio))
    raise ValueError(f"advantage scaling must be 'none', 'linear' or 'sqrt', got {mode!r}")
