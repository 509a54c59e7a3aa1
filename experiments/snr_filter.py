"""SNR-aware filtering against no filtering, over several seeds, on the tiny model of the quickstart.

    python experiments/snr_filter.py            # the figure: 3 arms x 5 seeds x 20 steps (105 min here)
    python experiments/snr_filter.py --quick    # a smoke run (3 arms x 2 seeds x 2 steps)
    python experiments/snr_filter.py --seeds 10 --steps 100 --group-size 16 --jobs 8   # a bigger machine

The model, env and hyperparameters are ``configs/quickstart.yaml``'s (a tiny Llama-style model built here,
GRPO on 3x3 FrozenLake, temperature 0.5), trained through the public ``Trainer`` class. One SFT warm start on
oracle trajectories (``runs/snr_filter/init``) is shared by every run, so the arms differ only in the filter
and the seeds only in RL sampling and training lakes (``trainer.seed`` = s, ``env.train_seed`` = 10000 s).
Seed s of every arm plays the same lakes with the same sampling seeds: the arms are paired by seed.

Arms (``filter.*`` keys; see ``agentgym.trainers.snr``):
    no-filter       top_p 1.0, zero-spread groups kept: every group trains
    top-p-linear    RAGEN-2's recommended rule: linear top-p 0.9, zero-spread groups dropped first
    top-p-softmax   RAGEN's main-table setting, read from github.com/mll-lab-nu/RAGEN (commit 20daedc,
                    docs/experiment_main_table.md and scripts/runs/run_main_table_diff_*.sh):
                    rollout_filter_strategy=top_p, top_p_prob_mode=softmax, type=largest,
                    metric=reward_variance (the std of the group's rewards), include_zero=True,
                    value 0.9 for "filter" and 1.0 for "nofilter" (our no-filter arm)

Every run logs MI, retrieval accuracy, MI z-scores and token entropy of its rollout batch (before
filtering) every ``--save-every`` steps (``trainer.diagnostics_every``) and saves a checkpoint there; the
final checkpoint is evaluated on ``--eval-episodes`` held-out lakes at the training temperature. Reported
per arm: final success (pooled episodes with a Wilson 95% interval; across-seed mean with a t interval), a
paired t-test and a Welch test against no filtering across seeds, kept ratio, rollout / update time per step,
and the curves. ``experiments/mi_predicts_success.py`` reads the per-run metrics kept in the JSON.

Outputs: ``experiments/results/snr_filter.{json,png}``; run folders (checkpoints) under ``runs/snr_filter``.
Rerunning resumes: a finished run (``result.json`` in its folder) is not run again, a killed one resumes
from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
STATE_FILE = "trainer_state.pt"  # agentgym.trainers.trainer.STATE_FILE (not imported: torch stays lazy)

ARMS: dict[str, dict[str, Any]] = {
    "no-filter": {
        "label": "no filter",
        "overrides": ["filter.strategy=top_p", "filter.value=1.0", "filter.include_zero=true"],
    },
    "top-p-linear": {
        "label": "linear top-p 0.9, zero groups dropped (RAGEN-2 recommended)",
        "overrides": [
            "filter.strategy=top_p",
            "filter.value=0.9",
            "filter.prob_mode=linear",
            "filter.include_zero=false",
        ],
    },
    "top-p-softmax": {
        "label": "softmax top-p 0.9, zero groups kept (RAGEN main table)",
        "overrides": [
            "filter.strategy=top_p",
            "filter.value=0.9",
            "filter.prob_mode=softmax",
            "filter.include_zero=true",
        ],
    },
}
BASELINE_ARM = "no-filter"

# RAGEN-2's main table (400 steps, 8 prompts x 16 rollouts): success % without filtering (gain with it)
RAGEN2_ANCHORS = [
    "RAGEN-2 (Qwen2.5, 400 steps, 8 prompts x 16 rollouts), success % without filter (gain with filter):",
    "  PPO 3B: Sokoban 12.9 (+16.0), FrozenLake 67.0 (+10.9);",
    "  0.5B: Sokoban 3.3 (+22.9), FrozenLake 19.5 (+0.0); 7B: Sokoban 42.4 (+4.9), FrozenLake 85.0 (-0.6).",
    "  Filtering cut step time by 26-41%.",
]

# the metrics.jsonl keys kept per RL step in the JSON (diag/... keys are kept except control tokens)
KEPT_KEYS = (
    "step",
    "success",
    "return_mean",
    "kept_ratio",
    "kept_groups",
    "in_group_reward_std",
    "kept_in_group_reward_std",
    "zero_spread_ratio",
    "format_valid_rate",
    "mean_turns",
    "rollout_tokens",
    "rollout_time_s",
    "update_time_s",
    "step_time_s",
    "train_tokens",
    "train_episodes",
    "skipped",
    "entropy",
    "approx_kl",
    "clip_frac",
    "grad_norm",
)


# ----- the runs -----


def base_overrides(args: argparse.Namespace) -> list[str]:
    """Overrides of the config file shared by the SFT warm start and every RL run."""
    out = [
        "trainer.progress=false",
        "trainer.plots=false",
        "trainer.threads=1",
        "trainer.eval_episodes=0",  # evaluated here, without the eval-time diagnostics
        "trainer.eval_before_rl=false",
        f"rollout.prompts_per_step={args.prompts}",
        f"rollout.group_size={args.group_size}",
    ]
    if args.size is not None:
        out.append(f"env.kwargs.size={args.size}")
    if args.quick:
        out += ["sft.episodes=16", "sft.epochs=1"]
    return out


def run_specs(args: argparse.Namespace, init_checkpoint: Path) -> list[dict[str, Any]]:
    """One spec per (seed, arm), seeds outermost so that partial results stay balanced across arms."""
    specs = []
    for seed in range(args.seeds):
        for arm in args.arms:
            run_dir = args.runs_dir / f"{arm}-seed{seed}"
            overrides = [
                *base_overrides(args),
                f"model.path={init_checkpoint}",
                "sft.episodes=0",
                f"trainer.output_dir={run_dir}",
                f"trainer.seed={seed}",
                f"env.train_seed={10_000 * seed}",
                f"trainer.steps={args.steps}",
                f"trainer.save_every={args.save_every}",
                f"trainer.diagnostics_every={args.save_every}",
                f"trainer.diagnostics_samples={args.diagnostics_samples}",
                *ARMS[arm]["overrides"],
            ]
            specs.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "run_dir": str(run_dir),
                    "config": str(args.config),
                    "overrides": overrides,
                    "eval_episodes": args.eval_episodes,
                }
            )
    return specs


def evaluate_checkpoint(checkpoint: Path, config: Any, episodes: int) -> dict[str, Any]:
    """``agentgym eval`` of a checkpoint on the held-out lakes, as the trainer's own final eval does (same
    seeds, temperature and token cap), without the model diagnostics; cached in ``eval/<checkpoint>``."""
    from agentgym.eval.runner import evaluate
    from agentgym.policies import HFPolicy

    policy = HFPolicy(
        str(checkpoint),
        temperature=config.trainer.eval_temperature,
        max_new_tokens=config.rollout.max_new_tokens,
        device="cpu",
    )
    try:
        summary = evaluate(
            config.env.id,
            policy,
            episodes,
            seed=config.env.eval_seed,
            out=checkpoint.parent / "eval" / checkpoint.name,
            env_kwargs=dict(config.env.kwargs),
            batch_size=config.trainer.eval_batch_size,
            progress=False,
            diagnostics=False,
        )
    finally:
        policy.close()
    return {
        "checkpoint": checkpoint.name,
        "episodes": summary["episodes"],
        "successes": int(round(summary["success_rate"] * summary["episodes"])),
        "success_rate": summary["success_rate"],
        "success_ci95": summary["success_ci95"],
        "mean_return": summary["mean_return"],
        "format_valid_rate": summary["format_valid_rate"],
        "mean_turns": summary["mean_turns"],
    }


def train(config_file: str, overrides: list[str]) -> Any:
    """Run (or resume) one training through the public Trainer class; returns its resolved config."""
    import torch

    from agentgym.trainers.config import load_config
    from agentgym.trainers.trainer import Trainer

    torch.set_num_threads(1)
    config = load_config(config_file, overrides)
    trainer = Trainer(config)
    try:
        trainer.run()
    finally:
        trainer.close()
    return config


def compact(record: dict[str, Any]) -> dict[str, Any]:
    """The metrics.jsonl keys this experiment keeps, floats rounded to 6 significant digits."""
    out = {}
    for key, value in record.items():
        if key in KEPT_KEYS or (key.startswith("diag/") and not key.startswith("diag/control_tokens")):
            out[key] = float(f"{value:.6g}") if isinstance(value, float) else value
    return out


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one (arm, seed), evaluate its final checkpoint; the result is cached in ``result.json``."""
    from agentgym.policies import latest_checkpoint

    run_dir = Path(spec["run_dir"])
    cached = run_dir / "result.json"
    if cached.exists():
        return json.loads(cached.read_text())
    started = time.perf_counter()
    config = train(spec["config"], spec["overrides"])
    trained = time.perf_counter()
    final = evaluate_checkpoint(latest_checkpoint(run_dir), config, spec["eval_episodes"])
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    result = {
        "arm": spec["arm"],
        "seed": spec["seed"],
        "run_dir": spec["run_dir"],
        "final": final,
        "train_wall_s": round(trained - started, 1),
        "eval_wall_s": round(time.perf_counter() - trained, 1),
        "metrics": [compact(r) for r in records if r.get("phase") == "rl"],
    }
    cached.write_text(json.dumps(result) + "\n")
    print(
        f"  {spec['arm']:14s} seed {spec['seed']}: final success {final['success_rate']:.3f} "
        f"({final['successes']}/{final['episodes']}), train {result['train_wall_s']:.0f}s, "
        f"eval {result['eval_wall_s']:.0f}s",
        flush=True,
    )
    return result


def warm_start(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The shared SFT warm start (a 0-step run: ``checkpoint-0``) and its held-out eval."""
    init_dir = args.runs_dir / "init"
    overrides = [*base_overrides(args), f"trainer.output_dir={init_dir}", "trainer.steps=0"]
    overrides.append(f"trainer.seed={args.init_seed}")
    config = train(str(args.config), overrides)
    checkpoint = init_dir / "checkpoint-0"
    return checkpoint, evaluate_checkpoint(checkpoint, config, args.eval_episodes)


# ----- statistics -----


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval of the mean; None with fewer than two values."""
    from scipy import stats

    if len(values) < 2:
        return None
    mean, sem = float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(len(values)))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1)) * sem
    return (mean - half, mean + half)


def compare(treated: dict[int, float], control: dict[int, float]) -> dict[str, Any]:
    """Paired t-test over the seeds both arms have (seed s of each arm plays the same lakes with the same
    sampling seeds), and Welch's unequal-variance t-test over all seeds of each; two-sided p-values."""
    from scipy import stats

    seeds = sorted(set(treated) & set(control))
    diffs = [treated[s] - control[s] for s in seeds]
    out: dict[str, Any] = {
        "paired_seeds": len(seeds),
        "mean_difference": float(np.mean(diffs)) if diffs else None,
        "difference_ci95": t_interval(diffs),
        "paired_t_p": None,
        "welch_p": None,
    }
    if len(seeds) >= 2:
        if np.std(diffs) > 0:
            out["paired_t_p"] = float(
                stats.ttest_rel([treated[s] for s in seeds], [control[s] for s in seeds])[1]
            )
        elif np.mean(diffs) == 0:
            out["paired_t_p"] = 1.0  # identical outcomes on every seed
    a, b = list(treated.values()), list(control.values())
    if len(a) >= 2 and len(b) >= 2 and (np.std(a) > 0 or np.std(b) > 0):
        out["welch_p"] = float(stats.ttest_ind(a, b, equal_var=False)[1])
    return out


def curve(runs: list[dict[str, Any]], key: str) -> dict[str, list[Any]]:
    """Across-seed mean and std of ``key`` at each step where any run logged it."""
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for record in run["metrics"]:
            value = record.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                by_step.setdefault(record["step"], []).append(float(value))
    steps = sorted(by_step)
    return {
        "step": steps,
        "mean": [float(np.mean(by_step[s])) for s in steps],
        "std": [float(np.std(by_step[s])) for s in steps],
        "n": [len(by_step[s]) for s in steps],
    }


CURVE_KEYS = (
    "success",
    "kept_ratio",
    "zero_spread_ratio",
    "diag/mi/trajectory/mi",
    "diag/mi/first_turn/mi",
    "diag/mi/trajectory/retrieval_acc",
    "diag/mi/trajectory/mi_zscore_ema",
    "diag/entropy",
    "diag/mi/trajectory/conditional_entropy",
)


def summarize_arm(runs: list[dict[str, Any]]) -> dict[str, Any]:
    from agentgym.eval.metrics import wilson_interval

    finals = [r["final"] for r in runs]
    successes, episodes = sum(f["successes"] for f in finals), sum(f["episodes"] for f in finals)
    rates = [f["success_rate"] for f in finals]
    steps = [
        {**m, "step_over_rollout": 1.0 + m["update_time_s"] / m["rollout_time_s"]}
        if m.get("rollout_time_s") and m.get("update_time_s") is not None
        else m
        for r in runs
        for m in r["metrics"]
    ]

    def mean_of(key: str) -> float | None:
        values = [m[key] for m in steps if isinstance(m.get(key), (int, float))]
        return float(np.mean(values)) if values else None

    rollout, update = mean_of("rollout_time_s"), mean_of("update_time_s")
    return {
        "seeds": [r["seed"] for r in runs],
        "final_success_per_seed": rates,
        "pooled_success": successes / episodes if episodes else None,
        "pooled_episodes": episodes,
        "pooled_wilson95": wilson_interval(successes, episodes),
        "mean_success": float(np.mean(rates)),
        "std_success": float(np.std(rates, ddof=1)) if len(rates) > 1 else None,
        "mean_success_t95": t_interval(rates),
        "kept_ratio": mean_of("kept_ratio"),
        "kept_ratio_per_seed": [float(np.mean([m["kept_ratio"] for m in r["metrics"]])) for r in runs],
        "skipped_steps": sum(int(m.get("skipped", 0)) for m in steps),
        "zero_spread_ratio": mean_of("zero_spread_ratio"),
        "rollout_time_s": rollout,
        "update_time_s": update,
        "rollout_plus_update_s": None if rollout is None or update is None else rollout + update,
        # the step in units of its own rollout time: the machine's load at that moment divides out (the
        # rollouts cost the same in every arm, in expectation)
        "step_over_rollout": mean_of("step_over_rollout"),
        "train_tokens_per_step": float(np.mean([m.get("train_tokens", 0.0) for m in steps])),  # skipped: 0
        "rollout_tokens_per_step": mean_of("rollout_tokens"),
        "train_wall_s": float(np.mean([r["train_wall_s"] for r in runs])),
        "curves": {key: curve(runs, key) for key in CURVE_KEYS},
    }


def analyze(results: list[dict[str, Any]], arms: list[str]) -> dict[str, Any]:
    """Per-arm summaries and each filter arm against the no-filter arm."""
    summary: dict[str, Any] = {"arms": {}, "comparisons": {}}
    for arm in arms:
        runs = sorted((r for r in results if r["arm"] == arm), key=lambda r: r["seed"])
        if runs:
            summary["arms"][arm] = {"label": ARMS[arm]["label"], **summarize_arm(runs)}
    base = summary["arms"].get(BASELINE_ARM)
    if base is None:
        return summary
    control = {r["seed"]: r["final"]["success_rate"] for r in results if r["arm"] == BASELINE_ARM}
    for arm, stats in summary["arms"].items():
        if arm == BASELINE_ARM:
            continue
        treated = {r["seed"]: r["final"]["success_rate"] for r in results if r["arm"] == arm}
        comparison = compare(treated, control)

        def change(key: str, stats: dict[str, Any] = stats) -> float | None:
            a, b = stats[key], base[key]
            return None if a is None or not b else 100.0 * (a - b) / b

        comparison["update_time_change_pct"] = change("update_time_s")
        comparison["rollout_plus_update_change_pct"] = change("rollout_plus_update_s")
        comparison["train_tokens_change_pct"] = change("train_tokens_per_step")
        comparison["step_over_rollout_change_pct"] = change("step_over_rollout")
        p = comparison["paired_t_p"]
        comparison["verdict"] = (
            "not enough paired seeds for a test"
            if p is None
            else f"{'significant' if p < 0.05 else 'not significant'} at the 5% level "
            f"(paired t-test over {comparison['paired_seeds']} seeds, p = {p:.3g})"
        )
        summary["comparisons"][arm] = comparison
    return summary


# ----- report -----


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def _change(x: float | None) -> str:
    return "-" if x is None else f"{x:+.0f}%"


def report(summary: dict[str, Any], baseline: dict[str, Any]) -> str:
    lines = [
        f"before RL (shared SFT warm start): success {baseline['success_rate']:.3f} "
        f"({baseline['successes']}/{baseline['episodes']} held-out episodes)",
        "",
        f"{'arm':14s} {'seeds':>5s} {'pooled success % [Wilson 95%]':>30s} {'mean % [t 95%]':>22s} "
        f"{'kept':>5s} {'rollout s':>9s} {'update s':>8s} {'tokens/step':>11s}",
    ]
    for arm, s in summary["arms"].items():
        lo, hi = s["pooled_wilson95"]
        t95 = s["mean_success_t95"]
        t_text = (
            f"{_pct(s['mean_success'])} [{_pct(t95[0])}, {_pct(t95[1])}]" if t95 else _pct(s["mean_success"])
        )
        pooled = f"{_pct(s['pooled_success'])} [{_pct(lo)}, {_pct(hi)}] (n={s['pooled_episodes']})"
        lines.append(
            f"{arm:14s} {len(s['seeds']):5d} {pooled:>30s} "
            f"{t_text:>22s} {s['kept_ratio'] or 0:5.2f} {s['rollout_time_s'] or 0:9.1f} "
            f"{s['update_time_s'] or 0:8.1f} {s['train_tokens_per_step'] or 0:11.0f}"
        )
    lines.append("")
    for arm, c in summary["comparisons"].items():
        ci = c["difference_ci95"]
        welch = "-" if c["welch_p"] is None else f"{c['welch_p']:.3g}"
        lines.append(
            f"{arm} - no-filter: {_pct(c['mean_difference'])} points"
            + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "")
            + f"; {c['verdict']}; Welch p = {welch}"
        )
        update, both = _change(c["update_time_change_pct"]), _change(c["rollout_plus_update_change_pct"])
        relative, tokens = _change(c["step_over_rollout_change_pct"]), _change(c["train_tokens_change_pct"])
        lines.append(
            f"    per step vs no filter: update time {update}, rollout + update {both} (wall), "
            f"step / its own rollout time {relative}, trained tokens {tokens}"
        )
    lines += ["", *RAGEN2_ANCHORS]
    lines.append(
        "  (their runs: 0.5B-7B pretrained models, 400 steps, 128 rollouts/step; ours: a ~1M-parameter model "
        "built here, a short run, a shared machine: the scale and the timing noise differ)"
    )
    return "\n".join(lines)


def plot(summary: dict[str, Any], baseline: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(summary["arms"])
    colors = {arm: f"C{i}" for i, arm in enumerate(ARMS)}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    ax = axes[0, 0]
    for i, arm in enumerate(arms):
        s = summary["arms"][arm]
        ax.scatter(
            [i] * len(s["final_success_per_seed"]), s["final_success_per_seed"], color=colors[arm], s=18
        )
        lo, hi = s["pooled_wilson95"]
        ax.errorbar(
            i - 0.15,
            s["pooled_success"],
            [[s["pooled_success"] - lo], [hi - s["pooled_success"]]],
            fmt="s",
            color="k",
            capsize=4,
            label="pooled, Wilson 95%" if i == 0 else None,
        )
        if s["mean_success_t95"]:
            tlo, thi = s["mean_success_t95"]
            ax.errorbar(
                i + 0.15,
                s["mean_success"],
                [[s["mean_success"] - tlo], [thi - s["mean_success"]]],
                fmt="D",
                color="gray",
                capsize=4,
                label="seed mean, t 95%" if i == 0 else None,
            )
    ax.axhline(baseline["success_rate"], color="k", ls=":", label="before RL")
    ax.set_xticks(range(len(arms)), arms, fontsize=8)
    ax.set_ylabel("final success (held-out)")
    ax.set_title("final success per seed", fontsize=10)
    ax.legend(fontsize=7)

    panels = [
        (axes[0, 1], "success", "success of the rollout batch"),
        (axes[0, 2], "kept_ratio", "kept ratio (SNR filter)"),
        (axes[1, 1], "diag/mi/trajectory/mi", "MI, trajectory (nats/token)"),
        (axes[1, 2], "diag/entropy", "token entropy of the rollouts (nats)"),
    ]
    for ax, key, title in panels:
        for arm in arms:
            c = summary["arms"][arm]["curves"][key]
            if not c["step"]:
                continue
            mean, std = np.array(c["mean"]), np.array(c["std"])
            marker = "o-" if key.startswith("diag") else "-"
            ax.plot(c["step"], mean, marker, color=colors[arm], label=arm, ms=4)
            ax.fill_between(c["step"], mean - std, mean + std, color=colors[arm], alpha=0.15)
        ax.set_title(title + " (mean ± std over seeds)", fontsize=10)
        ax.set_xlabel("RL step")
        if ax.get_lines():
            ax.legend(fontsize=7)

    ax = axes[1, 0]
    x = np.arange(len(arms))
    rollout = [summary["arms"][a]["rollout_time_s"] or 0 for a in arms]
    update = [summary["arms"][a]["update_time_s"] or 0 for a in arms]
    ax.bar(x, rollout, color="tab:blue", label="rollout")
    ax.bar(x, update, bottom=rollout, color="tab:orange", label="update")
    ax.set_xticks(x, arms, fontsize=8)
    ax.set_ylabel("seconds per step (wall, shared machine)")
    ax.set_title("step time: rollout + update (diagnostics excluded)", fontsize=10)
    ax.legend(fontsize=7)
    fig.suptitle("SNR-aware filtering vs none: GRPO, tiny model, FrozenLake (seeds paired across arms)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----- main -----


def portable(value: Any) -> Any:
    """``value`` with this checkout's absolute path removed from every string (paths relative to the repo)."""
    if isinstance(value, str):
        return value.replace(f"{REPO}/", "")
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (2 seeds x 2 steps, small batches)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per arm (0 .. seeds-1)")
    parser.add_argument("--steps", type=int, default=20, help="RL steps per run")
    parser.add_argument("--save-every", type=int, default=5, help="checkpoint + diagnostics every k steps")
    parser.add_argument("--prompts", type=int, default=8, help="groups (lakes) per RL step")
    parser.add_argument("--group-size", type=int, default=4, help="rollouts per group")
    parser.add_argument("--eval-episodes", type=int, default=64, help="held-out episodes per final eval")
    parser.add_argument(
        "--diagnostics-samples", type=int, default=64, help="(prompt, reasoning) pairs per MI"
    )
    parser.add_argument("--size", type=int, default=None, help="FrozenLake size (default: the config's)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once (one process each)")
    parser.add_argument("--init-seed", type=int, default=0, help="seed of the shared SFT warm start")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "quickstart.yaml")
    parser.add_argument("--runs-dir", type=Path, default=None, help="default runs/snr_filter[_quick]")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--replot", action="store_true", help="recompute the statistics and redraw from the stored runs"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.save_every = min(args.seeds, 2), 2, 1
        args.prompts, args.group_size, args.eval_episodes, args.diagnostics_samples = 2, 4, 8, 16
    if args.seeds < 1 or args.steps < 1 or args.save_every < 1 or args.eval_episodes < 1 or args.jobs < 1:
        parser.error("--seeds, --steps, --save-every, --eval-episodes and --jobs must be at least 1")
    name = "snr_filter_quick" if args.quick else "snr_filter"
    args.name = name
    args.runs_dir = args.runs_dir or REPO / "runs" / name
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / f"{args.name}.json", args.out / f"{args.name}.png"
    if args.replot:
        stored = json.loads(json_path.read_text())
        stored["summary"] = analyze(stored["runs"], stored["config"]["arms"])
        json_path.write_text(json.dumps(portable(stored), indent=1) + "\n")
        plot(stored["summary"], stored["before_rl"], png_path)
        print(report(stored["summary"], stored["before_rl"]))
        return stored
    started = time.perf_counter()
    print(f"SFT warm start -> {args.runs_dir / 'init'}", flush=True)
    init_checkpoint, before_rl = warm_start(args)
    print(
        f"before RL: success {before_rl['success_rate']:.3f} on {before_rl['episodes']} episodes", flush=True
    )
    specs = run_specs(args, init_checkpoint)
    print(
        f"{len(specs)} runs ({len(args.arms)} arms x {args.seeds} seeds), {args.jobs} at a time", flush=True
    )
    if args.jobs == 1:
        results = [run_one(spec) for spec in specs]
    else:
        context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
            results = list(pool.map(run_one, specs))
    summary = analyze(results, args.arms)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    config["arm_overrides"] = {arm: ARMS[arm]["overrides"] for arm in args.arms}
    output = {
        "config": config,
        "before_rl": before_rl,
        "summary": summary,
        "ragen2_anchors": RAGEN2_ANCHORS,
        "wall_s": round(time.perf_counter() - started, 1),
        "runs": results,
    }
    json_path.write_text(json.dumps(portable(output), indent=1) + "\n")
    plot(summary, before_rl, png_path)
    print(report(summary, before_rl))
    print(f"wrote {json_path} and {png_path} ({output['wall_s']:.0f}s)")
    return output


if __name__ == "__main__":
    main()
