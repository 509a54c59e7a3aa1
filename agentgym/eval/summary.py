"""``summary.json`` from stored episode records: the same code for ``agentgym eval`` and the pytest plugin.

Every episode metric is over the completed episodes: ``episodes`` counts them, and ``aborted`` counts the
episodes the environment aborted (``info["aborted"]``, e.g. a crashed browser), which are left out of
every metric, since their outcome says nothing about the policy (``aborted_seeds`` lists them; the
records hold each ``abort_reason``). A rerun on the same ``--out`` plays them again.

Model diagnostics (``diagnostics``) are added on top by the caller, since they need the policy's model
(``agentgym.eval.diagnostics.model_diagnostics``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import agentgym
from agentgym.eval.metrics import is_aborted, success_by_turn, summarize, turn_state_shares
from agentgym.registry import response_format_name


def grader_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """How many episodes each grader scored, by name in sorted order: the ``grader`` an environment puts
    in its last step's info (``final_info``). Episodes whose environment names no grader are not counted."""
    graders = Counter((r.get("final_info") or {}).get("grader") for r in records)
    return {name: graders[name] for name in sorted(g for g in graders if isinstance(g, str))}


def episode_reports(records: list[dict[str, Any]], env_id: str, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Summary entries every policy gets: the response format, turn states, the success curve and the
    graders that scored the episodes."""
    fmt = response_format_name(env_id, env_kwargs)
    return {
        "response_format": fmt,
        "turn_states": turn_state_shares(records, fmt),
        "success_by_turn": success_by_turn(records),
        "graders": grader_counts(records),
    }


def build_summary(
    records: list[dict[str, Any]],
    *,
    env_id: str,
    policy_spec: str,
    seed: int,
    env_kwargs: dict[str, Any],
    policy_kwargs: dict[str, Any],
    workers: int,
    elapsed: float,
    played_now: int,
    corrupt_lines: int = 0,
) -> dict[str, Any]:
    """``summary.json`` without model diagnostics, from the latest record of each seed of the run
    (aborted ones included: they are counted here and left out of the metrics). ``corrupt_lines``: the
    unreadable lines skipped when the trajectory log was read back."""
    completed = [r for r in records if not is_aborted(r)]
    metrics = summarize(completed)
    summary = {
        "env": env_id,
        "policy": policy_spec,
        "episodes": metrics.pop("episodes"),
        "aborted": len(records) - len(completed),
        "aborted_seeds": sorted(r["seed"] for r in records if is_aborted(r)),
        **metrics,
        # replies cut at the token cap (finish_reason "length"): a cut reply is easily misread as the model's
        "truncated_replies": sum((r.get("finish_reason") or []).count("length") for r in completed),
        "seed": seed,
        "env_kwargs": env_kwargs,
        "policy_kwargs": policy_kwargs,
        "workers": workers,
        "elapsed_s": round(elapsed, 3),
        "episodes_played_now": played_now,
        "corrupt_lines_skipped": corrupt_lines,
        "agentgym_version": agentgym.__version__,
    }
    summary.update(episode_reports(completed, env_id, env_kwargs))
    return summary
