"""Tool-use collapse at small scale: RL only vs interleaved SFT + RL, with the tool-call probe.

    python experiments/tool_use_collapse.py            # 2 seeds, about 25 minutes on 2 busy CPU cores
    python experiments/tool_use_collapse.py --quick    # a smoke test (a few minutes)
    python experiments/tool_use_collapse.py --replot   # the table and the PNG again from the JSON

The tool-use collapse paper (arXiv 2606.26027) trains tool calling with RL and sees it collapse: the
policy puts more and more probability on end-of-turn (or a repeated opener) right after the tool-call
opener, where a healthy policy writes the JSON opener. Interleaving SFT on expert trajectories of the
tasks that failed recently (RL for K steps, SFT, resume RL) keeps the format. This script runs both
schedules on Sokoban in agentgym's ``tool_call`` format with a tiny model built here (nothing
downloaded), from one SFT warm start per seed, on the same seeds:

    warm start   SFT on oracle trajectories (the model learns the tool-call format), shared by both arms
    rl_only      GRPO for ``--steps`` steps
    interleaved  the same GRPO, plus every ``--rl-steps`` steps an SFT phase (``--sft-epochs`` epochs) on
                 oracle trajectories of the tasks whose group mostly failed in the last ``--window``
                 steps (``interleave`` in the trainer config), ``--rounds`` times

Until the first SFT phase the two arms are the same run (same model, same sampling seeds). Logged every
``--probe-every`` RL steps (``trainer.tool_probe_every``, ``agentgym.eval.diagnostics.tool_call_probe``)
on the step's rollout turns: p_lbrace, p_eos and p_repeat_open after the opener written right after the
generation prompt, and the same where the sampled reply wrote the opener (``in_reply``). The valid-call
rate is the share of turns whose reply is a valid tool call (``format_valid_rate`` of the rollouts).

Rewards are Sokoban's (RAGEN's): -0.1 per move, +1 per box onto a target, +10 when solved; a reply that
is not a valid call moves nothing and costs the format penalty. With the env's defaults (two moves per
turn, penalty -0.1) an invalid reply (-0.1) beats a valid two-move reply (-0.2) unless it solves, so RL
is paid to drop the format; here each turn makes one move and the penalty is ``--format-penalty``
(default -0.2), so a valid call is never worse than an invalid one.

Outputs: ``experiments/results/tool_use_collapse.{json,png}``; the run folders go to ``--runs-dir``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

ENV = "agentgym/Sokoban-v0"
ARMS = ("rl_only", "interleaved")
PROBES = ("p_lbrace", "p_eos", "p_repeat_open")
SUMMARY_KEYS = (
    "valid_call_rate",
    "success",
    *PROBES,
    "in_reply_p_lbrace",
    "in_reply_p_eos",
    "in_reply_p_repeat_open",
    "in_reply_opened_rate",
)


def base_config(args: argparse.Namespace, seed: int, run_dir: Path) -> dict[str, Any]:
    """The trainer config both arms share (and the warm start, with sft.episodes > 0 and no RL)."""
    return {
        "model": {
            "tiny": {
                "arch": "llama",
                "hidden_size": args.hidden,
                "layers": args.layers,
                "heads": 4,
                "vocab_size": 512,
                "corpus_seeds": 30,
                "seed": seed,
            }
        },
        "env": {
            "id": ENV,
            "kwargs": {
                "response_format": "tool_call",
                "dim_room": [5, 5],
                "max_turns": 3,
                "max_actions_per_turn": 1,
                "format_penalty": args.format_penalty,
            },
            "train_seed": 10_000 * seed,
            "sft_seed": 1_000_000 + 10_000 * seed,
        },
        "rollout": {
            "prompts_per_step": args.prompts,
            "group_size": args.group,
            "max_new_tokens": 56,
            "temperature": args.temperature,
        },
        "algorithm": {"name": "grpo", "lr": args.lr, "micro_batch_size": 16},
        "sft": {"episodes": 0, "epochs": args.warm_epochs, "lr": args.sft_lr, "batch_size": 16},
        "trainer": {
            "output_dir": str(run_dir),
            "seed": seed,
            "steps": args.steps,
            "save_every": 10_000,
            "eval_episodes": 0,
            "progress": False,
            "plots": False,
            "threads": args.threads,
            "tool_probe_every": args.probe_every,
            "tool_probe_prompts": args.probe_prompts,
        },
    }


def train(config: dict[str, Any]) -> None:
    from agentgym.trainers.config import load_config
    from agentgym.trainers.trainer import train as run

    run(load_config(base=config))


def warm_start(args: argparse.Namespace, seed: int) -> Path:
    """SFT on oracle trajectories, no RL: ``checkpoint-0`` is where both arms start."""
    run_dir = args.runs_dir / f"warm-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    config = base_config(args, seed, run_dir)
    config["sft"]["episodes"] = args.warm_episodes
    config["trainer"].update({"steps": 0, "eval_before_rl": False})
    train(config)
    return run_dir / "checkpoint-0"


def arm(args: argparse.Namespace, name: str, seed: int, start: Path) -> list[dict[str, Any]]:
    """One arm from the warm start; returns its metrics.jsonl records."""
    run_dir = args.runs_dir / f"{name}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    config = base_config(args, seed, run_dir)
    config["model"]["path"] = str(start)
    if name == "interleaved":
        config["interleave"] = {
            "enabled": True,
            "rl_steps": args.rl_steps,
            "failure_window": args.window,
            "sft_epochs": args.sft_epochs,
            "rounds": args.rounds,
            "lr": args.sft_lr,
        }
    train(config)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def curves(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The RL steps' valid-call rate, success and probe values, and the steps after which SFT ran."""
    rl = [r for r in records if r["phase"] == "rl"]
    out: dict[str, Any] = {
        "step": [r["step"] for r in rl],
        "valid_call_rate": [r["format_valid_rate"] for r in rl],
        "success": [r["success"] for r in rl],
        "return_mean": [r["return_mean"] for r in rl],
        "sft_after_steps": sorted({r["step"] for r in records if r["phase"] == "sft_interleave"}),
        "sft_tasks": [r["tasks"] for r in records if r["phase"] == "sft_interleave" and r["sft_step"] == 1],
    }
    probed = [r for r in rl if "tool_probe/p_lbrace" in r]
    out["probe_step"] = [r["step"] for r in probed]
    for key in (*PROBES, "p_rest"):
        out[key] = [r[f"tool_probe/{key}"] for r in probed]
        out[f"in_reply_{key}"] = [r[f"tool_probe/in_reply/{key}"] for r in probed]
    out["in_reply_opened_rate"] = [r["tool_probe/in_reply/opened_rate"] for r in probed]
    return out


def tail_mean(values: list[float | None], n: int) -> float | None:
    """Mean of the last ``n`` values that are not None."""
    kept = [v for v in values if v is not None][-n:]
    return float(np.mean(kept)) if kept else None


def head_mean(values: list[float | None], n: int) -> float | None:
    """Mean of the first ``n`` values that are not None."""
    kept = [v for v in values if v is not None][:n]
    return float(np.mean(kept)) if kept else None


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def summarize(runs: dict[str, dict[int, dict[str, Any]]], last: int) -> dict[str, Any]:
    """Per arm: each metric at the first probe and averaged over the last ``last`` steps (probes: the
    last ``last`` probes), per seed and over seeds."""
    summary: dict[str, Any] = {}
    for name, by_seed in runs.items():
        rows: dict[str, Any] = {}
        for key in SUMMARY_KEYS:
            first = [head_mean(c[key], 1) for c in by_seed.values()]
            final = [tail_mean(c[key], last) for c in by_seed.values()]
            rows[key] = {"first": _mean(first), "final_per_seed": final, "final_mean": _mean(final)}
        summary[name] = rows
    return summary


def plot(runs: dict[str, dict[int, dict[str, Any]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("step", "valid_call_rate", "valid-call rate (rollout turns)"),
        ("probe_step", "p_lbrace", 'p_lbrace: p({" | prompt + opener)'),
        ("probe_step", "p_eos", "p_eos: p(end-of-turn | prompt + opener)"),
        ("probe_step", "p_repeat_open", "p_repeat_open: p(opener | prompt + opener)"),
        ("probe_step", "in_reply_p_eos", "p_eos where the reply wrote the opener"),
        ("step", "success", "success (rollouts)"),
    ]
    colors = {"rl_only": "tab:red", "interleaved": "tab:blue"}
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    for ax, (x, key, label) in zip(axes.flat, panels, strict=True):
        for name, by_seed in runs.items():
            for k, c in enumerate(by_seed.values()):
                points = [(s, v) for s, v in zip(c[x], c[key], strict=True) if v is not None]
                if points:
                    ax.plot(
                        *zip(*points, strict=True),
                        "-" if x == "step" else "o-",
                        ms=3,
                        lw=1.2,
                        alpha=0.85,
                        color=colors[name],
                        label=name if k == 0 else None,
                    )
            if name == "interleaved":
                for s in next(iter(by_seed.values()))["sft_after_steps"]:
                    ax.axvline(s, color="gray", ls=":", lw=0.8)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
        if key in ("valid_call_rate", "success", "p_lbrace"):
            ax.set_ylim(-0.03, 1.03)
        if ax.get_lines():
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run for a smoke test")
    parser.add_argument("--replot", action="store_true", help="summary and PNG from the stored JSON")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=30, help="RL steps of each arm")
    parser.add_argument("--rl-steps", type=int, default=10, help="K: RL steps between SFT phases")
    parser.add_argument("--window", type=int, default=5, help="M: SFT on tasks failed in the last M steps")
    parser.add_argument("--sft-epochs", type=int, default=2, help="epochs of each SFT phase (paper: 2)")
    parser.add_argument("--rounds", type=int, default=2, help="SFT phases in a run")
    parser.add_argument("--prompts", type=int, default=4, help="env seeds (groups) per RL step")
    parser.add_argument("--group", type=int, default=4, help="rollouts per group")
    parser.add_argument("--lr", type=float, default=5e-4, help="RL learning rate")
    parser.add_argument("--temperature", type=float, default=0.7, help="rollout sampling temperature")
    parser.add_argument("--sft-lr", type=float, default=2e-3, help="learning rate of every SFT phase")
    parser.add_argument("--warm-episodes", type=int, default=192, help="oracle episodes of the warm start")
    parser.add_argument("--warm-epochs", type=int, default=4)
    parser.add_argument("--format-penalty", type=float, default=-0.2)
    parser.add_argument("--probe-every", type=int, default=2)
    parser.add_argument("--probe-prompts", type=int, default=16, help="rollout turns each probe reads")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--last", type=int, default=6, help="final values: mean of the last N steps")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/tool_use_collapse"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps, args.rl_steps, args.window, args.rounds = args.seeds[:1], 6, 3, 2, 1
        args.warm_episodes, args.warm_epochs, args.probe_every, args.probe_prompts = 32, 2, 3, 4
    if args.replot:  # the table, JSON summary and PNG again from the stored runs, no training
        stem = "tool_use_collapse_quick" if args.quick else "tool_use_collapse"
        report(json.loads((args.out / f"{stem}.json").read_text()), args)
        return
    import torch

    import agentgym  # noqa: F401 - registers the environments

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    runs: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in ARMS}
    timings: dict[str, float] = {}
    for seed in args.seeds:
        t0 = time.perf_counter()
        start = warm_start(args, seed)
        timings[f"warm-seed{seed}"] = time.perf_counter() - t0
        for name in ARMS:
            t0 = time.perf_counter()
            runs[name][seed] = curves(arm(args, name, seed, start))
            timings[f"{name}-seed{seed}"] = time.perf_counter() - t0
            c = runs[name][seed]
            print(
                f"seed {seed} {name:12s} valid-call rate {c['valid_call_rate'][0]:.2f} -> "
                f"{tail_mean(c['valid_call_rate'], args.last):.2f}   p_eos {c['p_eos'][0]:.3f} -> "
                f"{c['p_eos'][-1]:.3f}   p_lbrace {c['p_lbrace'][0]:.3f} -> {c['p_lbrace'][-1]:.3f}   "
                f"({timings[f'{name}-seed{seed}']:.0f} s)",
                flush=True,
            )
    result = {
        "what": "RL only vs interleaved SFT + RL on Sokoban (tool_call format), tiny model, same seeds",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "env": ENV,
        "env_kwargs": base_config(args, 0, Path("."))["env"]["kwargs"],
        "runs": {name: {str(s): c for s, c in by_seed.items()} for name, by_seed in runs.items()},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "total_s": round(time.perf_counter() - started, 1),
    }
    report(result, args)


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the side-by-side table, and write the JSON (with its summary) and the PNG."""
    runs = {name: {int(s): c for s, c in by_seed.items()} for name, by_seed in result["runs"].items()}
    seeds = sorted(next(iter(runs.values())))
    result["summary"] = summarize(runs, args.last)
    result["paired_final_difference"] = {  # interleaved minus rl_only, per seed
        key: [
            None if a is None or b is None else b - a
            for a, b in zip(
                result["summary"]["rl_only"][key]["final_per_seed"],
                result["summary"]["interleaved"][key]["final_per_seed"],
                strict=True,
            )
        ]
        for key in SUMMARY_KEYS
    }
    print(f"\nmeans over seeds {seeds}; first -> final (mean of the last {args.last} steps, or probes)")
    print(f"{'':26s}" + "".join(f"{name:>22s}" for name in ARMS) + "   interleaved - rl_only per seed")
    for key in SUMMARY_KEYS:
        cells = []
        for name in ARMS:
            row = result["summary"][name][key]
            first = "-" if row["first"] is None else f"{row['first']:.3f}"
            final = "-" if row["final_mean"] is None else f"{row['final_mean']:.3f}"
            cells.append(f"{first} -> {final}")
        diffs = " ".join("-" if d is None else f"{d:+.3f}" for d in result["paired_final_difference"][key])
        print(f"{key:26s}" + "".join(f"{c:>22s}" for c in cells) + f"   {diffs}")
    stem = "tool_use_collapse_quick" if args.quick else "tool_use_collapse"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(
        runs,
        args.out / f"{stem}.png",
        f"Tool-use collapse, tiny model, Sokoban tool_call: RL only (red) vs interleaved SFT + RL (blue; "
        f"dotted: SFT phases), seeds {seeds}",
    )
    print(f"wrote {args.out / stem}.json and .png ({result['total_s']:.0f} s of runs)")


if __name__ == "__main__":
    main()
