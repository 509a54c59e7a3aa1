"""Episode-level metrics: success with a Wilson interval, returns, format validity, turns."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% for the default z)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate ``trajectories.jsonl`` records (see ``Episode.to_record``) into summary metrics."""
    n = len(records)
    successes = sum(bool(r["success"]) for r in records)
    all_format = [ok for r in records for ok in r["format_ok"]]
    all_valid = [ok for r in records for ok in r["action_valid"]]
    longest = max((len(r["format_ok"]) for r in records), default=0)
    per_turn = []
    for t in range(longest):
        at_turn = [r["format_ok"][t] for r in records if len(r["format_ok"]) > t]
        per_turn.append(_mean(at_turn))
    low, high = wilson_interval(successes, n)
    return {
        "episodes": n,
        "success_rate": successes / n if n else 0.0,
        "success_ci95": [low, high],
        "mean_return": _mean([r["return"] for r in records]),
        "format_valid_rate": _mean(all_format),
        "format_valid_rate_per_turn": per_turn,
        "action_valid_rate": _mean(all_valid),
        "mean_turns": _mean([r["turns"] for r in records]),
    }
