"""Env step overhead (parse + step + render) per environment, and oracle-eval episodes/s with 1 and 2 workers.

    python benchmarks/env_step.py [--envs ID ...] [--steps 300] [--episodes 200]

Prints a table and writes benchmarks/results/env_step.json. Environments that cannot be built here
(missing data or browser) are listed as skipped with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import gymnasium as gym

import agentgym
from agentgym.eval.runner import evaluate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
KWARGS = {
    "agentgym/GSM8K-v0": {"data_path": str(SHARED / "gsm8k" / "test.jsonl")},
    "agentgym/ALFWorld-v0": {"data_dir": str(SHARED / "alfworld")},
}


def step_times(env_id: str, steps: int) -> dict:
    env = gym.make(env_id, **KWARGS.get(env_id, {}))
    step_s, parse_s, seed = [], [], 0
    env.reset(seed=seed)
    fmt, tools = env.unwrapped.format, env.unwrapped.tools
    while len(step_s) < steps:
        action = env.unwrapped.oracle_action()
        t0 = time.perf_counter()
        fmt.parse(action, tools)
        t1 = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        t2 = time.perf_counter()
        parse_s.append(t1 - t0)
        step_s.append(t2 - t1)
        if terminated or truncated:
            seed += 1
            env.reset(seed=seed)
    env.close()
    return {
        "median_step_us": statistics.median(step_s) * 1e6,
        "median_parse_us": statistics.median(parse_s) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="*", default=list(agentgym.ENVS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--episodes", type=int, default=50, help="starting episode count for the eval rates")
    parser.add_argument(
        "--min-seconds", type=float, default=4.0, help="grow episodes until 1 worker takes this long"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "env_step.json"))
    args = parser.parse_args()

    rows = {}
    print(f"{'env':28} {'step us':>9} {'parse us':>9} {'ep/s 1w':>9} {'ep/s 2w':>9} {'2w/1w':>6}")
    for env_id in args.envs:
        try:
            row = step_times(env_id, args.steps)
            # grow the episode count until one worker needs a few seconds: process start-up must not dominate
            episodes, kwargs = args.episodes, KWARGS.get(env_id, {})
            while True:
                one = evaluate(env_id, "oracle", episodes, env_kwargs=kwargs, progress=False)["elapsed_s"]
                if one >= args.min_seconds or episodes >= 20_000:
                    break
                episodes = min(20_000, int(episodes * max(2.0, 1.2 * args.min_seconds / max(one, 1e-3))))
            two = evaluate(env_id, "oracle", episodes, workers=2, env_kwargs=kwargs, progress=False)[
                "elapsed_s"
            ]
            rates = [episodes / one, episodes / two]
            row["episodes"] = episodes
            row.update(
                {
                    "oracle_episodes_per_s_1_worker": rates[0],
                    "oracle_episodes_per_s_2_workers": rates[1],
                    "speedup_2_workers": rates[1] / rates[0],
                }
            )
        except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
            rows[env_id] = {"skipped": f"{type(exc).__name__}: {exc}"[:200]}
            print(f"{env_id:28} skipped: {rows[env_id]['skipped']}")
            continue
        rows[env_id] = row
        print(
            f"{env_id:28} {row['median_step_us']:9.1f} {row['median_parse_us']:9.1f} "
            f"{rates[0]:9.1f} {rates[1]:9.1f} {rates[1] / rates[0]:6.2f}"
        )
    result = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "steps": args.steps,
        "date": time.strftime("%Y-%m-%d"),
        "envs": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
