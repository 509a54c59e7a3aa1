"""SNR-aware filtering (RAGEN-2): keep the rollout groups whose returns disagree the most.

A group is the G rollouts of one prompt (same env seed). When every rollout of a group gets the same
return, a group-relative advantage is zero everywhere: the group adds noise (KL, entropy, clipping) and
compute but no signal. Each group is scored by the spread of its returns (std, or variance), and whole
groups are kept or dropped before any advantage is computed.

Strategies (``value`` means something different for each):
    top_p, prob_mode="linear"   sort by score, keep the smallest prefix whose summed score reaches
                                ``value`` x the total score - ``selection_eps`` (RAGEN-2's recommended
                                rule, value 0.9); nothing is kept when that cannot be reached
    top_p, prob_mode="softmax"  nucleus selection over softmax(scores): the smallest prefix whose
                                probability mass reaches ``value``
    top_k                       keep the int(value x groups) best groups (a fraction, at least one)
    top_k_abs                   keep the int(value) best groups (at least one)

``include_zero=False`` removes zero-spread groups before the strategy runs (they can never be kept);
``value >= 1`` with a top_p strategy keeps every candidate, so ``value=1.0, include_zero=True`` is
"no filtering". Linear top-p never keeps a zero-score group, whatever ``include_zero`` says.

The defaults are RAGEN's rule, read from ``ragen/trainer/rollout_filter.py`` (``RolloutFilter.
_select_top_groups`` and ``RewardRolloutFilter.filter``) of github.com/mll-lab-nu/RAGEN at commit
20daedc47558e000f7de912b060646bf2e8026bd (the file last changed in cdc052b8, 2026-03-12):

- the score is the *unbiased* std of the group's returns (``ddof=1``, torch's default); RAGEN's
  "reward_variance" metric is this std. ``metric="var"`` (the variance, same ddof) is our option.
- linear top-p subtracts a slack ``selection_eps=0.01`` from the threshold. An absolute slack: when
  ``value x total <= selection_eps`` (every group nearly flat) the threshold is met by the empty prefix and
  nothing is kept. A threshold above the summed positive scores (only with a negative slack) keeps nothing
  too. Both are logged as warnings; the trainer then skips the update (RAGEN: ``empty_after_filter``).
- a score <= 1e-10 is zero spread.

A sum that misses its threshold by rounding error only (1e-12 relative: 3 of 6 equal scores summed
against 0.5 x the sum of all 6) reaches it; at such exact boundaries RAGEN's float32 result is noise.

Where we differ on purpose: RAGEN computes in float32, where the std of an all-equal group of, e.g.,
-0.7s comes out ~6e-8 (above its 1e-10 zero cutoff, so such a group is a softmax candidate); here an
all-equal group scores exactly 0. RAGEN's sorts are unstable, so its order among equal scores is
unspecified; here scores are rounded to 12 significant digits and equal scores rank by group index
(mirrored groups such as [1, 0, 0] and [0, 1, 1] have the same std, but not always in floating point).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

ZERO_SPREAD = 1e-10  # a group whose score is at most this has (numerically) equal returns (RAGEN's cutoff)
ROUNDING = 1e-12  # a sum that reaches its threshold up to this (relative) rounding error reaches it
SIGNIFICANT_DIGITS = 12  # scores are rounded to this: equal spreads compare equal despite rounding noise

log = logging.getLogger(__name__)


def group_scores(returns: Any, metric: str = "std", ddof: int = 1) -> np.ndarray:
    """The spread of each group's returns: std (``metric="std"``) or variance (``"var"``), with ``ddof``.

    ``ddof=1`` is the unbiased estimate (RAGEN), ``ddof=0`` the population one. A group of at most ``ddof``
    rollouts has no measurable spread and scores 0; a group whose returns are all equal scores exactly 0.
    Scores are rounded to 12 significant digits, so that groups with the same spread (say 3 wins of 8 and
    5 wins of 8) score exactly the same and rank by index, not by floating-point noise.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] < 1:
        raise ValueError(f"returns must have shape (groups, group_size), got {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("returns must be finite (found nan or inf)")
    if metric not in ("std", "var"):
        raise ValueError(f"metric must be 'std' or 'var', got {metric!r}")
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 (population) or 1 (unbiased), got {ddof!r}")
    if r.shape[1] <= ddof:
        return np.zeros(len(r))
    variance = r.var(axis=1, ddof=ddof)
    variance[np.ptp(r, axis=1) == 0] = 0.0  # all equal: exactly zero, not a rounding residue
    return _round_significant(np.sqrt(variance) if metric == "std" else variance)


def _round_significant(x: np.ndarray, digits: int = SIGNIFICANT_DIGITS) -> np.ndarray:
    out = x.copy()
    positive = x > 0
    magnitude = 10.0 ** np.floor(np.log10(x[positive]))
    out[positive] = np.round(x[positive] / magnitude, digits - 1) * magnitude
    return out


def snr_filter(
    returns: Any,
    strategy: str = "top_p",
    value: float = 0.9,
    include_zero: bool = False,
    metric: str = "std",
    prob_mode: str = "linear",
    *,
    ddof: int = 1,
    selection_eps: float = 0.01,
) -> list[int]:
    """The sorted indices of the groups to keep; ``returns`` has shape (groups, group_size).

    An empty list means "no update this step"; when top-p's threshold swallows every group it is logged
    as a warning on the ``agentgym.trainers.snr`` logger.
    """
    scores = group_scores(returns, metric, ddof)
    if strategy == "top_p":
        if not value > 0:
            raise ValueError(f"top_p needs value > 0, got {value}")
        if prob_mode not in ("linear", "softmax"):
            raise ValueError(f"prob_mode must be 'linear' or 'softmax', got {prob_mode!r}")
    elif strategy == "top_k":
        if not 0 < value <= 1:
            raise ValueError(f"top_k keeps a fraction of the groups: 0 < value <= 1, got {value}")
    elif strategy == "top_k_abs":
        if value < 1:
            raise ValueError(f"top_k_abs keeps a number of groups: value >= 1, got {value}")
    else:
        raise ValueError(f"strategy must be 'top_p', 'top_k' or 'top_k_abs', got {strategy!r}")

    candidates = np.arange(len(scores)) if include_zero else np.flatnonzero(scores > ZERO_SPREAD)
    if len(candidates) == 0:
        return []
    # best first; equal scores keep their original order so the result is deterministic
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    ranked = scores[order]

    if strategy == "top_p":
        if value >= 1:
            keep = len(order)
        elif prob_mode == "linear":
            keep = _linear_top_p(ranked, value, selection_eps)
        else:
            probs = np.exp(ranked - ranked.max())
            probs /= probs.sum()
            reached = np.flatnonzero(np.cumsum(probs) >= value - ROUNDING)
            keep = int(reached[0]) + 1 if len(reached) else len(order)
    elif strategy == "top_k":
        keep = max(1, int(value * len(scores)))  # a fraction of all groups, not of the candidates
    else:
        keep = max(1, int(value))
    return sorted(int(i) for i in order[:keep])


def _linear_top_p(ranked: np.ndarray, value: float, selection_eps: float) -> int:
    """How many of the best-first ``ranked`` scores RAGEN's linear top-p keeps (0: none)."""
    total = float(ranked.sum())
    threshold = value * total - selection_eps
    threshold -= ROUNDING * max(1.0, abs(threshold))  # e.g. 3 of 6 equal scores reach 0.5 x their sum
    summed, keep = 0.0, 0
    for score in ranked:
        if summed >= threshold or score <= 0:
            break
        summed += float(score)
        keep += 1
    if summed < threshold:
        log.warning(
            "SNR filter keeps no group: linear top-p threshold %.4g (%.3g x total score %.4g - eps %.3g) "
            "is above the summed positive scores %.4g",
            threshold,
            value,
            total,
            selection_eps,
            summed,
        )
        return 0
    if keep == 0:
        log.warning(
            "SNR filter keeps no group: %.3g x total score %.4g is within selection_eps %.3g of zero "
            "(every group is nearly flat)",
            value,
            total,
            selection_eps,
        )
    return keep


def filter_stats(returns: Any, kept: list[int], metric: str = "std", ddof: int = 1) -> dict[str, float]:
    """What to log about a filtering decision: kept ratio and in-group std (with ``ddof``) before and after.

    ``metric`` is accepted for symmetry with ``snr_filter``; the logged spread is always the std.
    """
    r = np.asarray(returns, dtype=np.float64)
    if len(r) == 0:
        return {
            "kept_ratio": 0.0,
            "kept_groups": 0.0,
            "in_group_reward_std": 0.0,
            "kept_in_group_reward_std": 0.0,
            "zero_spread_ratio": 0.0,
        }
    spread = group_scores(r, "std", ddof)
    return {
        "kept_ratio": len(kept) / len(r),
        "kept_groups": float(len(kept)),
        "in_group_reward_std": float(spread.mean()),
        "kept_in_group_reward_std": float(spread[kept].mean()) if kept else 0.0,
        "zero_spread_ratio": float((spread <= ZERO_SPREAD).mean()),
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
