"""Schema variants: does a policy keep its score when the response schema changes?

The same policy is evaluated under the variants of its trained format (``agentgym.formats.VARIANTS``:
renamed tags, JSON vs python-call syntax, reordered fields), and each variant's success and format-valid
rate are reported with their drop against the trained schema (drop = trained - variant, so a positive
drop is a loss). This is one of three format-stability measures; the other two, the per-turn
format-valid rate and the turn states / control-token spikes, are in every summary
(``agentgym.eval.metrics``, ``agentgym.eval.control_tokens``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentgym.eval.runner import evaluate
from agentgym.formats import VARIANTS
from agentgym.policies import Policy
from agentgym.registry import response_format_name


def evaluate_format_variants(
    env_id: str,
    policy: str | Policy,
    episodes: int,
    *,
    trained: dict[str, Any] | None = None,
    variants: Sequence[str] | None = None,
    out: str | Path | None = None,
    env_kwargs: dict[str, Any] | None = None,
    **evaluate_kwargs: Any,
) -> dict[str, Any]:
    """Evaluate ``policy`` under each schema variant of the active format; report the drop of each.

    ``trained`` is the summary of the run under the trained schema (evaluated here when None). Variant
    runs go to ``OUT/variants/<name>/`` and resume like any eval. Returns ``{"trained_format",
    "trained": {success_rate, format_valid_rate}, "variants": {name: {success_rate, format_valid_rate,
    success_drop, format_valid_drop, episodes}}}``.
    """
    evaluate_kwargs.setdefault("diagnostics", False)  # the variants report success and format only
    env_kwargs = dict(env_kwargs or {})
    base = response_format_name(env_id, env_kwargs)
    names = list(variants) if variants is not None else VARIANTS.get(base, [])
    if not names:
        raise ValueError(f"format {base!r} has no schema variants; known: {', '.join(VARIANTS)}")
    out = Path(out) if out is not None else None
    if trained is None:
        trained = evaluate(
            env_id,
            policy,
            episodes,
            out=None if out is None else out / "variants" / base,
            env_kwargs=env_kwargs,
            **evaluate_kwargs,
        )
    report: dict[str, Any] = {
        "trained_format": base,
        "trained": {k: trained[k] for k in ("success_rate", "format_valid_rate")},
        "variants": {},
    }
    for name in names:
        summary = evaluate(
            env_id,
            policy,
            episodes,
            out=None if out is None else out / "variants" / name,
            env_kwargs={**env_kwargs, "response_format": name},
            **evaluate_kwargs,
        )
        report["variants"][name] = {
            "success_rate": summary["success_rate"],
            "format_valid_rate": summary["format_valid_rate"],
            "success_drop": trained["success_rate"] - summary["success_rate"],
            "format_valid_drop": trained["format_valid_rate"] - summary["format_valid_rate"],
            "episodes": summary["episodes"],
        }
    return report
