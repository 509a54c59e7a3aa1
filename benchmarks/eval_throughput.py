"""Eval throughput: episodes per second through the pytest plugin (``-n 1`` vs ``-n 2``) and through
``agentgym eval`` (``--workers 1`` vs ``--workers 2``), same seeds, same episodes.

    python benchmarks/eval_throughput.py

Two workloads: a scripted policy (``oracle`` on Sokoban: milliseconds per episode, so start-up and
per-test overhead dominate) and a model policy (the quickstart-sized tiny model, saved here, as ``hf:DIR``
on FrozenLake with 32 new tokens per turn; diagnostics off so only episodes are timed). Each route runs in
a fresh subprocess (start-up included, as a user sees it). The summaries of all four runs of a workload
are checked to agree. Results go to ``benchmarks/results/eval_throughput.json`` with the machine's load
average, since the CPUs are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "eval_throughput.json"
MEASURED = ("episodes", "success_rate", "mean_return", "format_valid_rate", "mean_turns")


def timed(command: list[str], cwd: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def run_workload(tmp: Path, env_id: str, policy: str, episodes: int, policy_kwargs: dict) -> dict:
    rows, summaries = {}, {}
    (tmp / "evals").mkdir(exist_ok=True)
    kw = json.dumps(policy_kwargs)
    tag = policy.split(":")[0]
    for workers in (1, 2):
        out = tmp / f"{tag}-pytest-n{workers}"
        seconds = timed(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                str(tmp / "evals"),
                "--agentgym-env",
                env_id,
                "--agentgym-policy",
                policy,
                "--agentgym-episodes",
                str(episodes),
                "--agentgym-policy-kwargs",
                kw,
                "--agentgym-no-diagnostics",
                "--agentgym-out",
                str(out),
                "-n",
                str(workers),
            ],
            tmp,
        )
        rows[f"pytest -n {workers}"] = seconds
        summaries[f"pytest -n {workers}"] = json.loads((out / "summary.json").read_text())
        out = tmp / f"{tag}-eval-w{workers}"
        seconds = timed(
            [
                sys.executable,
                "-m",
                "agentgym.cli",
                "eval",
                "--env",
                env_id,
                "--policy",
                policy,
                "--episodes",
                str(episodes),
                "--workers",
                str(workers),
                "--out",
                str(out),
                "--policy-kwargs",
                kw,
                "--no-diagnostics",
                "--no-progress",
            ],
            tmp,
        )
        rows[f"agentgym eval --workers {workers}"] = seconds
        summaries[f"agentgym eval --workers {workers}"] = json.loads((out / "summary.json").read_text())
    reference = {k: summaries["agentgym eval --workers 1"][k] for k in MEASURED}
    agree = all({k: s[k] for k in MEASURED} == reference for s in summaries.values())
    result = {
        "env": env_id,
        "policy": policy if tag != "hf" else "hf:<tiny model dir>",
        "policy_kwargs": policy_kwargs,
        "episodes": episodes,
        "routes": {
            name: {"wall_s": round(s, 2), "episodes_per_s": round(episodes / s, 2)}
            for name, s in rows.items()
        },
        "speedup_pytest_n2_over_n1": round(rows["pytest -n 1"] / rows["pytest -n 2"], 2),
        "speedup_eval_w2_over_w1": round(
            rows["agentgym eval --workers 1"] / rows["agentgym eval --workers 2"], 2
        ),
        "summaries_agree": agree,
        "summary": reference,
        "load_average_after": os.getloadavg(),
    }
    print(f"{env_id} {result['policy']} x {episodes}")
    for name, row in result["routes"].items():
        print(f"  {name:28s} {row['wall_s']:7.1f}s  {row['episodes_per_s']:6.2f} episodes/s")
    print(
        f"  pytest -n 2 / -n 1: {result['speedup_pytest_n2_over_n1']}x; eval --workers 2 / 1: "
        f"{result['speedup_eval_w2_over_w1']}x; summaries agree: {agree}; load {os.getloadavg()}",
        flush=True,
    )
    return result


def save_tiny_model(path: Path) -> None:
    from agentgym.tiny_models import build_tiny_model, env_corpus, train_tokenizer

    tokenizer = train_tokenizer(env_corpus(["agentgym/FrozenLake-v0"], seeds=30), vocab_size=1024)
    build_tiny_model(tokenizer, hidden_size=128, layers=4, heads=4).save_pretrained(path)
    tokenizer.save_pretrained(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scripted-episodes", type=int, default=200)
    parser.add_argument("--model-episodes", type=int, default=32)
    args = parser.parse_args()
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result["scripted"] = run_workload(tmp, "agentgym/Sokoban-v0", "oracle", args.scripted_episodes, {})
        save_tiny_model(tmp / "tiny")
        result["model"] = run_workload(
            tmp,
            "agentgym/FrozenLake-v0",
            f"hf:{tmp / 'tiny'}",
            args.model_episodes,
            {"max_new_tokens": 32, "device": "cpu"},
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
