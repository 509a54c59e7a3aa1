"""Does MI measured at a checkpoint predict later success? Spearman correlations over the snr_filter runs.

    python experiments/snr_filter.py && python experiments/mi_predicts_success.py   # the figure
    python experiments/mi_predicts_success.py --quick   # on snr_filter_quick.json (snr_filter.py --quick)

Every run of ``experiments/snr_filter.py`` logged, every ``save_every`` steps, the diagnostics of its
rollout batch (``trainer.diagnostics_every``): the batch that checkpoint-s (the policy after s updates)
sampled, before filtering. One point per (run, checkpoint-s): x is a diagnostic at checkpoint-s, y is
success measured later:

- ``final`` (primary, as RAGEN-2 reports it: "mutual information correlates with final performance"): the
  run's final success on the held-out lakes;
- ``next``: the success of the rollout batches sampled between checkpoint-s and the next checkpoint (the
  policies after s+1 ... s+save_every updates; each batch plays lakes never played before, at the
  evaluation temperature). Points whose window is incomplete are left out.

The MI family (``agentgym.eval.mi`` via ``agentgym.eval.diagnostics``): the MI estimate (per token),
retrieval accuracy, the MI z-score and its EMA variant, for both of RAGEN-2's pair samplings (first turn,
trajectory). Entropy: the token entropy of the rollouts and the conditional entropy H(Z|X) of the reasoning.

Statistics: Spearman's rho over all points (``rho``, the number RAGEN-2 reports) and within checkpoints
(``rho_within``: the mean over checkpoints of rho across runs, which takes out the trend that diagnostics and
success share over training). Two-sided p-values permute the runs' outcomes (run r's diagnostics against
run pi(r)'s successes at the same checkpoints), so the points of one run are not counted as independent;
95% intervals come from a bootstrap over runs. RAGEN-2 reports about +0.39 for the MI family and -0.11 to
-0.14 for entropy metrics (Qwen2.5 models, their tasks): printed beside ours.

Outputs: ``experiments/results/mi_predicts_success.{json,png}``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("trajectory", "first_turn")
MI_FAMILY = ("mi", "retrieval_acc", "mi_zscore", "mi_zscore_ema")
METRICS: dict[str, tuple[str, str]] = {  # name -> (metrics.jsonl key, family)
    **{f"{key} ({mode})": (f"diag/mi/{mode}/{key}", "mi") for mode in MODES for key in MI_FAMILY},
    "token entropy": ("diag/entropy", "entropy"),
    **{f"H(Z|X) ({mode})": (f"diag/mi/{mode}/conditional_entropy", "entropy") for mode in MODES},
}
TARGETS = ("final", "next")
RAGEN2_MI, RAGEN2_ENTROPY = 0.39, (-0.14, -0.11)  # RAGEN-2 project page: MI family, entropy metrics
PLOTTED = ("mi (trajectory)", "retrieval_acc (trajectory)", "mi_zscore_ema (trajectory)", "token entropy")


def points(runs: list[dict[str, Any]], every: int) -> list[dict[str, Any]]:
    """One point per (run, checkpoint-s) with diagnostics: the diagnostics and both targets."""
    out = []
    for index, run in enumerate(runs):
        success = {r["step"]: r["success"] for r in run["metrics"]}
        for record in run["metrics"]:
            s = record["step"] - 1  # the record of step s+1 holds the rollouts of checkpoint-s
            if s % every or not any(k.startswith("diag/mi/") for k in record):
                continue
            window = [success[t] for t in range(s + 2, s + every + 2) if t in success]
            point = {
                "run": index,
                "arm": run["arm"],
                "seed": run["seed"],
                "checkpoint": s,
                "final": run["final"]["success_rate"],
                "next": float(np.mean(window)) if len(window) == every else None,
            }
            for name, (key, _) in METRICS.items():
                value = record.get(key)
                point[name] = (
                    float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
                )
            out.append(point)
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (average ranks for ties); nan when either side is constant."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def within_checkpoints(x: np.ndarray, y: np.ndarray, checkpoints: np.ndarray) -> float:
    """The mean over checkpoints of rho across the runs at that checkpoint: whether a run with more MI
    than the other runs at checkpoint-s does better, with the common trend over training taken out."""
    rhos = []
    for s in np.unique(checkpoints):
        at = checkpoints == s
        if at.sum() >= 3:
            value = spearman(x[at], y[at])
            if not math.isnan(value):
                rhos.append(value)
    return float(np.mean(rhos)) if rhos else float("nan")


def correlate(
    pts: list[dict[str, Any]], metric: str, target: str, permutations: int, boots: int, seed: int = 0
) -> dict[str, Any]:
    """Spearman's rho of ``metric`` against ``target`` over all points (``rho``) and within checkpoints
    (``rho_within``), each with a two-sided p-value from permuting the runs' outcomes (run r's diagnostics
    paired with run pi(r)'s successes at the same checkpoints: the within-run dependence and the common
    trend over training stay in the null) and a 95% interval from a bootstrap over runs."""
    usable = [p for p in pts if p[metric] is not None and p[target] is not None]
    result: dict[str, Any] = {"n_points": len(usable), "n_runs": len({p["run"] for p in usable})}
    empty = {"rho": None, "p_value": None, "ci95": None, "rho_within": None, "p_within": None}
    if len(usable) < 3:
        return {**result, **empty}
    x = np.array([p[metric] for p in usable])
    y = np.array([p[target] for p in usable])
    runs = np.array([p["run"] for p in usable])
    checkpoints = np.array([p["checkpoint"] for p in usable])
    rho, within = spearman(x, y), within_checkpoints(x, y, checkpoints)
    if math.isnan(rho):
        return {**result, **empty}
    result.update(rho=rho, rho_within=None if math.isnan(within) else within)
    rng = np.random.default_rng(seed)
    ids = np.unique(runs)
    outcome = {(int(r), int(s)): float(v) for r, s, v in zip(runs, checkpoints, y, strict=True)}
    hits = hits_within = 0
    for _ in range(permutations):
        mapping = dict(zip(ids.tolist(), rng.permutation(ids).tolist(), strict=True))
        swapped = [outcome.get((mapping[int(r)], int(s))) for r, s in zip(runs, checkpoints, strict=True)]
        keep = np.array([v is not None for v in swapped])
        y_perm = np.array([v for v in swapped if v is not None])
        value = spearman(x[keep], y_perm)
        hits += int(not math.isnan(value) and abs(value) >= abs(rho) - 1e-12)
        if result["rho_within"] is not None:
            value = within_checkpoints(x[keep], y_perm, checkpoints[keep])
            hits_within += int(not math.isnan(value) and abs(value) >= abs(within) - 1e-12)
    result["p_value"] = (hits + 1) / (permutations + 1)
    result["p_within"] = (hits_within + 1) / (permutations + 1) if result["rho_within"] is not None else None
    samples, samples_within = [], []
    for _ in range(boots):
        take = np.concatenate(
            [np.flatnonzero(runs == r) for r in rng.choice(ids, size=len(ids), replace=True)]
        )
        value = spearman(x[take], y[take])
        if not math.isnan(value):
            samples.append(value)
        value = within_checkpoints(x[take], y[take], checkpoints[take])
        if not math.isnan(value):
            samples_within.append(value)
    result["ci95"] = (
        [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))] if samples else None
    )
    result["ci95_within"] = (
        [float(np.percentile(samples_within, 2.5)), float(np.percentile(samples_within, 97.5))]
        if samples_within
        else None
    )
    return result


def analyze(snr: dict[str, Any], permutations: int, boots: int) -> dict[str, Any]:
    every = int(snr["config"]["save_every"])
    pts = points(snr["runs"], every)
    table = {
        target: {name: correlate(pts, name, target, permutations, boots) for name in METRICS}
        for target in TARGETS
    }
    families: dict[str, dict[str, float | None]] = {}
    for target in TARGETS:
        for stat in ("rho", "rho_within"):
            families[f"{target}/{stat}"] = {}
            for family in ("mi", "entropy"):
                rhos = [table[target][n][stat] for n, (_, f) in METRICS.items() if f == family]
                rhos = [r for r in rhos if r is not None]
                families[f"{target}/{stat}"][family] = float(np.mean(rhos)) if rhos else None
    tested = [
        (f"{target} {stat} {name}", c[p])
        for target, row in table.items()
        for name, c in row.items()
        for stat, p in (("rho", "p_value"), ("rho_within", "p_within"))
        if c.get(p) is not None
    ]
    alpha = 0.05 / max(1, len(tested))  # Bonferroni over every rho this script tests
    return {
        "source": "snr_filter.json",
        "tests": len(tested),
        "bonferroni_alpha": alpha,
        "below_0.05": [name for name, p in tested if p < 0.05],
        "significant_after_bonferroni": [name for name, p in tested if p < alpha],
        "save_every": every,
        "primary_target": "final",
        "points": pts,
        "correlations": table,
        "family_mean_rho": families,
        "ragen2": {"mi_family": RAGEN2_MI, "entropy": list(RAGEN2_ENTROPY)},
    }


def _cell(c: dict[str, Any], stat: str, ci: str, p: str) -> str:
    if c.get(stat) is None:
        return "-"
    interval = "" if c.get(ci) is None else f" [{c[ci][0]:+.2f}, {c[ci][1]:+.2f}]"
    return f"{c[stat]:+.2f}{interval} p={c[p]:.3f}"


def report(result: dict[str, Any]) -> str:
    width = 30
    columns = [(t, stat) for t in TARGETS for stat in ("rho", "rho_within")]
    lines = [
        f"{len(result['points'])} points (run x checkpoint), checkpoints every {result['save_every']} steps; "
        "rho: all points, within: mean over checkpoints of rho across runs; [bootstrap 95%] p=permutation",
        f"{'metric':28s} " + " ".join(f"{f'{t} {stat}':>{width}s}" for t, stat in columns),
    ]
    for name in METRICS:
        cells = []
        for target, stat in columns:
            c = result["correlations"][target][name]
            if stat == "rho":
                cells.append(f"{_cell(c, 'rho', 'ci95', 'p_value'):>{width}s}")
            else:
                cells.append(f"{_cell(c, 'rho_within', 'ci95_within', 'p_within'):>{width}s}")
        lines.append(f"{name:28s} " + " ".join(cells))
    for key, fam in result["family_mean_rho"].items():
        mi, ent = fam["mi"], fam["entropy"]
        lines.append(
            f"mean {key}: MI family "
            + ("-" if mi is None else f"{mi:+.2f}")
            + ", entropy family "
            + ("-" if ent is None else f"{ent:+.2f}")
        )
    nominal = ", ".join(result["below_0.05"]) or "none"
    corrected = ", ".join(result["significant_after_bonferroni"]) or "none"
    lines.append(
        f"{result['tests']} tests: p < 0.05 for {nominal}; "
        f"after Bonferroni (p < {result['bonferroni_alpha']:.4f}): {corrected}"
    )
    lines.append(
        "RAGEN-2: MI family about +0.39, entropy metrics -0.11 to -0.14 (Qwen2.5 0.5B-7B, many tasks); "
        "ours: a ~1M-parameter model, 3x3 FrozenLake, short runs"
    )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = result["points"]
    arms = sorted({p["arm"] for p in pts})
    fig, axes = plt.subplots(len(TARGETS), len(PLOTTED), figsize=(4 * len(PLOTTED), 3.6 * len(TARGETS)))
    axes = np.atleast_2d(axes)
    for row, target in enumerate(TARGETS):
        for col, name in enumerate(PLOTTED):
            ax = axes[row, col]
            for i, arm in enumerate(arms):
                chosen = [p for p in pts if p["arm"] == arm and p[name] is not None and p[target] is not None]
                ax.scatter(
                    [p[name] for p in chosen], [p[target] for p in chosen], s=16, color=f"C{i}", label=arm
                )
            c = result["correlations"][target][name]
            pooled, within = _cell(c, "rho", "", "p_value"), _cell(c, "rho_within", "", "p_within")
            title = f"{name}\nrho {pooled}; within {within}"
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(f"{name} at checkpoint-s", fontsize=8)
            if col == 0:
                ax.set_ylabel(
                    "final success (held-out)" if target == "final" else "success until the next checkpoint",
                    fontsize=8,
                )
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
    fig.suptitle(
        "Diagnostic at a checkpoint vs later success (Spearman; RAGEN-2: MI ~ +0.39, entropy ~ -0.12)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="use snr_filter_quick.json (a smoke run)")
    parser.add_argument("--input", type=Path, default=None, help="default results/snr_filter[_quick].json")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--permutations", type=int, default=5000)
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args(argv)
    name = "mi_predicts_success_quick" if args.quick else "mi_predicts_success"
    source = args.input or RESULTS / ("snr_filter_quick.json" if args.quick else "snr_filter.json")
    if not source.exists():
        raise SystemExit(
            f"{source} is missing: run experiments/snr_filter.py{' --quick' if args.quick else ''} first"
        )
    snr = json.loads(source.read_text())
    result = analyze(snr, args.permutations, args.bootstrap)
    result["source"] = str(source.name)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / f"{name}.png")
    print(report(result))
    print(f"wrote {args.out / name}.json and .png")
    return result


if __name__ == "__main__":
    main()
