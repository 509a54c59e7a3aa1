"""Mutual information between prompts and sampled reasoning: the template-collapse diagnostic (RAGEN-2).

Take N distinct prompts x_j and M sampled reasonings z_i, z_i drawn from prompt ``owner[i]``. Score every
reasoning under every prompt: ``logp[i, j] = log p(z_i | x_j)`` (a per-token mean or a per-sequence sum,
see :mod:`agentgym.eval.scoring`). Under the uniform mixture of the batch's prompts:

    matched_i  = logp[i, owner(i)]                       log p(z_i | its own prompt)
    marginal_i = logsumexp_j logp[i, j] - log N          log of the mixture (1/N) sum_j p(z_i | x_j)
    MI         = mean(matched) - mean(marginal)          at most log N (an estimate: can dip below 0)
    H(Z|X)     = -mean(matched),  H(Z) = -mean(marginal)
    retrieval  = mean 1[argmax_j logp[i, j] == owner(i)] (chance 1/N)
    MI z-score = mean((matched - marginal) / (std(marginal) + 1e-3))

A policy whose reasoning ignores its input ("template collapse") scores every z_i equally under every
prompt, so MI is about 0 and retrieval is at chance, however high its entropy stays.

Identical prompts are one column: their columns are merged (the first kept) and owners remapped, so a
batch with repeated prompts does not count a retrieval of the twin prompt as a miss.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

STD_EPS = 1e-3  # RAGEN-2's constant in the z-score denominator


def dedupe_columns(
    logp: np.ndarray, owner: Sequence[int], prompts: Sequence[Hashable] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Merge the columns of identical prompts (keep the first of each) and remap ``owner`` onto them."""
    logp = np.asarray(logp, dtype=np.float64)
    owners = np.asarray(owner, dtype=np.int64)
    if prompts is None:
        return logp, owners
    if len(prompts) != logp.shape[1]:
        raise ValueError(f"prompts has {len(prompts)} entries for {logp.shape[1]} columns")
    first: dict[Hashable, int] = {}
    keep: list[int] = []
    column_of = np.empty(len(prompts), dtype=np.int64)
    for j, key in enumerate(prompts):
        if key not in first:
            first[key] = len(keep)
            keep.append(j)
        column_of[j] = first[key]
    return logp[:, keep], column_of[owners]


def mutual_information(
    logp: Any,
    owner: Sequence[int],
    prompts: Sequence[Hashable] | None = None,
    *,
    marginal_std: float | None = None,
) -> dict[str, float]:
    """MI-family metrics of a cross-scoring matrix (see the module docstring).

    Args:
        logp: array (samples, N prompts) of log p(z_i | x_j); ``-inf`` is allowed off the owner column.
        owner: ``owner[i]`` is the column z_i was sampled from.
        prompts: optional hashable key per column (e.g. the prompt's token ids as a tuple); columns with
            equal keys count as one prompt.
        marginal_std: the std of ``marginal`` to normalise the z-score with (the EMA helper passes its
            running value); the batch's own std when None.

    Returns a dict with ``mi``, ``conditional_entropy``, ``marginal_entropy``, ``retrieval_acc``,
    ``retrieval_chance``, ``mi_zscore``, ``mi_upper_bound`` (log N), ``marginal_std``, ``n_prompts``
    and ``n_samples``.
    """
    logp, owners = dedupe_columns(np.asarray(logp), owner, prompts)
    if logp.ndim != 2:
        raise ValueError(f"logp must be a 2-D (samples, prompts) array, got shape {logp.shape}")
    samples, n = logp.shape
    if samples == 0 or n == 0:
        raise ValueError("logp is empty")
    if len(owners) != samples:
        raise ValueError(f"owner has {len(owners)} entries for {samples} samples")
    if owners.min() < 0 or owners.max() >= n:
        raise ValueError(f"owner indices must lie in [0, {n})")
    rows = np.arange(samples)
    matched = logp[rows, owners]
    if not np.all(np.isfinite(matched)):
        raise ValueError("log p(z_i | own prompt) must be finite for every sample")
    top = logp.max(axis=1, keepdims=True)
    marginal = np.log(np.exp(logp - top).sum(axis=1)) + top[:, 0] - math.log(n)
    std = float(marginal.std()) if marginal_std is None else float(marginal_std)
    # argmax picks the first maximum; a tie with the owner counts as a hit only if the owner comes first,
    # so an input-agnostic policy (all columns equal) retrieves at chance, not at 100%.
    retrieved = logp.argmax(axis=1) == owners
    return {
        "mi": float(matched.mean() - marginal.mean()),
        "conditional_entropy": float(-matched.mean()),
        "marginal_entropy": float(-marginal.mean()),
        "retrieval_acc": float(retrieved.mean()),
        "retrieval_chance": 1.0 / n,
        "mi_zscore": float(((matched - marginal) / (std + STD_EPS)).mean()),
        "mi_upper_bound": math.log(n),
        "marginal_std": float(marginal.std()),
        "n_prompts": int(n),
        "n_samples": int(samples),
    }


class MutualInformationEMA:
    """The EMA variant of the MI z-score: the std of ``marginal`` is smoothed across calls (decay 0.9),
    so a batch whose marginals happen to be tightly bunched does not blow the z-score up.

    >>> tracker = MutualInformationEMA()
    >>> metrics = tracker.update(logp, owner)   # every k training steps
    >>> metrics["mi_zscore_ema"]
    """

    def __init__(self, decay: float = 0.9) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError("decay must lie in [0, 1)")
        self.decay = decay
        self.marginal_std: float | None = None

    def update(
        self, logp: Any, owner: Sequence[int], prompts: Sequence[Hashable] | None = None
    ) -> dict[str, float]:
        """The metrics of this batch plus ``marginal_std_ema`` and ``mi_zscore_ema``."""
        metrics = mutual_information(logp, owner, prompts)
        current = metrics["marginal_std"]
        if self.marginal_std is None:
            self.marginal_std = current
        else:
            self.marginal_std = self.decay * self.marginal_std + (1.0 - self.decay) * current
        smoothed = mutual_information(logp, owner, prompts, marginal_std=self.marginal_std)
        metrics["marginal_std_ema"] = self.marginal_std
        metrics["mi_zscore_ema"] = smoothed["mi_zscore"]
        return metrics
