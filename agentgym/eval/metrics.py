"""Metrics computed from stored episodes alone (no model): success with a Wilson interval, returns,
format validity, turns, the success curve, turn states and the aggregation of control-token spikes.

Turn states. Every assistant turn falls in exactly one state:

- ``healthy_tool_call``: the reply parses under the active format (``format_ok``) and the episode goes on
  after it: a well-formed action the environment carried out.
- ``healthy_answer``: the reply parses and it ends the episode (``terminated``): the agent's final,
  well-formed move or submission.
- ``text_pollution``: the reply does not parse but holds at least one control marker of the format (e.g.
  ``<answer>``, ``</tool_call>``, see ``ResponseFormat.control_markers``) and some content besides: the
  structure is there, but text leaked into or around it, or the markers are unbalanced or out of order.
- ``full_collapse``: the reply does not parse and is structureless: no control marker at all (prose, an
  empty reply) or nothing but control markers and whitespace (degenerate repetition).

Control-token spikes: :func:`control_spike_report` aggregates the per-position wrong control masses that
``agentgym.eval.control_tokens.wrong_control_mass`` measures with a model: the mean over scored positions,
the mean over turns of each turn's largest mass (the spike), and the share of turns whose spike exceeds
``SPIKE_THRESHOLD``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from agentgym.formats import ResponseFormat, get_format

TURN_STATES = ("healthy_tool_call", "healthy_answer", "text_pollution", "full_collapse")
SPIKE_THRESHOLD = 0.5


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


def is_aborted(record: dict[str, Any]) -> bool:
    """Whether the environment aborted the episode (``info["aborted"]`` on its last step, e.g. WebShop's
    crashed browser): not the policy's doing, so it is no outcome of the policy. Records written before
    the ``aborted`` field existed carry the flag in ``final_info`` only."""
    if "aborted" in record:
        return bool(record["aborted"])
    return bool((record.get("final_info") or {}).get("aborted"))


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate ``trajectories.jsonl`` records (see ``Episode.to_record``) into summary metrics. The
    caller chooses the records: ``agentgym eval`` passes the completed episodes (no aborted one)."""
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


def success_by_turn(records: Sequence[dict[str, Any]]) -> list[float]:
    """Entry t is the share of episodes won within t + 1 turns (the success curve of the leaderboard)."""
    longest = max((r["turns"] for r in records), default=0)
    n = len(records)
    return (
        [sum(bool(r["success"]) and r["turns"] <= t + 1 for r in records) / n for t in range(longest)]
        if n
        else []
    )


def turn_state(response: str, format_ok: bool, ends_episode: bool, fmt: ResponseFormat | str) -> str:
    """The state of one assistant turn (definitions in the module docstring)."""
    if format_ok:
        return "healthy_answer" if ends_episode else "healthy_tool_call"
    grammar = get_format(fmt).marker_grammar()
    text = response if isinstance(response, str) else ""
    if not grammar.markers_in(text) or not grammar.strip_markers(text).strip():
        return "full_collapse"
    return "text_pollution"


def turn_state_shares(records: Sequence[dict[str, Any]], fmt: ResponseFormat | str) -> dict[str, float]:
    """The share of turns in each state over ``trajectories.jsonl`` records (and ``turns``, their count)."""
    counts: Counter[str] = Counter()
    for record in records:
        replies = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
        for t, (reply, ok) in enumerate(zip(replies, record["format_ok"], strict=False)):
            last = t == len(record["format_ok"]) - 1
            counts[turn_state(reply, bool(ok), last and bool(record.get("terminated")), fmt)] += 1
    total = sum(counts.values())
    shares = {state: (counts[state] / total if total else 0.0) for state in TURN_STATES}
    shares["turns"] = total
    return shares


def control_spike_report(per_turn_masses: Sequence[np.ndarray]) -> dict[str, Any]:
    """Aggregate the per-position wrong control masses of many turns (see the module docstring)."""
    scored = [m for m in per_turn_masses if len(m)]
    if not scored:
        return {
            "wrong_control_mass_mean": None,
            "wrong_control_mass_spike": None,
            "spike_turn_rate": None,
            "turns_scored": 0,
        }
    peaks = np.array([m.max() for m in scored])
    return {
        "wrong_control_mass_mean": float(np.concatenate(scored).mean()),
        "wrong_control_mass_spike": float(peaks.mean()),
        "spike_turn_rate": float((peaks > SPIKE_THRESHOLD).mean()),
        "turns_scored": len(scored),
    }
