"""Did training change the success rate? Two `agentgym eval --out` folders of the same env and seeds
(a checkpoint before and after RL, say), compared episode by episode.

Both evals play the same seeds, so the right test is paired: McNemar's exact test on the seeds that only one
of them solved (a binomial test of those discordant seeds at 1/2). Two Wilson intervals that overlap can
still hide a significant paired difference; intervals that do not overlap are rarely needed.

    python experiments/paired_evals.py BEFORE_DIR AFTER_DIR [--out results.json]

Prints both success rates with 95% Wilson intervals, the seeds each one solved alone and the p-value;
aborted episodes (the env's failure, not the policy's) and seeds only one eval played are left out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from agentgym.errors import UsageError
from agentgym.eval.leaderboard import read_json_file
from agentgym.eval.metrics import is_aborted, wilson_interval
from agentgym.eval.run_files import TrajectoryLog, latest_by_seed


def mcnemar_exact_p(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs as a binomial(n, 1/2) draw."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_first, only_second) + 1)) / 2**n
    return min(1.0, 2 * tail)


def outcomes(run_dir: Path) -> tuple[dict[int, bool], dict[str, Any]]:
    """Seed -> success of an eval folder's finished, not aborted episodes, and its run identity."""
    run_file, log = run_dir / "run.json", run_dir / "trajectories.jsonl"
    if not run_file.is_file() or not log.is_file():
        raise UsageError(f"{run_dir} is not an `agentgym eval --out` folder (no run.json or its episodes)")
    records = latest_by_seed(TrajectoryLog(log).load())
    run = read_json_file(run_file, "the run.json of an `agentgym eval --out` folder", ("env",))
    return {seed: bool(r["success"]) for seed, r in records.items() if not is_aborted(r)}, run


def compare(before_dir: Path, after_dir: Path) -> dict[str, Any]:
    before, before_run = outcomes(before_dir)
    after, after_run = outcomes(after_dir)
    if before_run.get("env") != after_run.get("env") or before_run.get("env_kwargs") != after_run.get(
        "env_kwargs"
    ):
        raise UsageError(
            f"the two evals play different tasks: {before_run.get('env')} {before_run.get('env_kwargs')} "
            f"against {after_run.get('env')} {after_run.get('env_kwargs')}"
        )
    seeds = sorted(before.keys() & after.keys())
    if not seeds:
        raise UsageError("the two evals share no finished episode (different --seed ranges?)")
    only_before = [s for s in seeds if before[s] and not after[s]]
    only_after = [s for s in seeds if after[s] and not before[s]]

    def side(outcome: dict[int, bool], run: dict[str, Any]) -> dict[str, Any]:
        solved = sum(outcome[s] for s in seeds)
        return {
            "policy": run.get("policy"),
            "success_rate": solved / len(seeds),
            "success_ci95": list(wilson_interval(solved, len(seeds))),
        }

    return {
        "env": before_run.get("env"),
        "env_kwargs": before_run.get("env_kwargs"),
        "paired_episodes": len(seeds),
        "before": side(before, before_run),
        "after": side(after, after_run),
        "solved_only_before": len(only_before),
        "solved_only_after": len(only_after),
        "seeds_solved_only_before": only_before,
        "seeds_solved_only_after": only_after,
        "mcnemar_exact_p": mcnemar_exact_p(len(only_before), len(only_after)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("before", type=Path, help="an `agentgym eval --out` folder")
    parser.add_argument("after", type=Path, help="another, of the same env and seeds")
    parser.add_argument("--out", type=Path, help="also write the comparison as JSON here")
    args = parser.parse_args(argv)
    try:
        result = compare(args.before, args.after)
    except UsageError as exc:
        print(f"paired_evals: error: {exc}", file=sys.stderr)
        return 2
    for name in ("before", "after"):
        side = result[name]
        low, high = side["success_ci95"]
        print(f"{name:6s} {side['success_rate']:6.1%} [{low:.1%}, {high:.1%}]  {side['policy']}")
    print(
        f"{result['paired_episodes']} paired episodes: solved only before {result['solved_only_before']}, "
        f"only after {result['solved_only_after']}; McNemar exact p = {result['mcnemar_exact_p']:.2g}"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
