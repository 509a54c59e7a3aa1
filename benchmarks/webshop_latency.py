"""WebShop in a real browser: step latency, episodes per second, search latency and memory per env.

Targets (issue 4): median step under 100 ms with a warm browser, search under 5 ms on the 1000-product
set. Steps are the oracle's (search, result pages, product, options, buy), timed around ``env.step``,
so they include parsing, the browser's page load and the text extraction. Memory per env is what each
extra env adds: the browser processes' proportional set size (shared pages split among the processes that
share them) plus the Python process's growth.

    python benchmarks/webshop_latency.py [--episodes 30] [--data-dir ../shared/data/webshop]

Writes benchmarks/results/webshop_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path

import gymnasium as gym
import psutil

import agentgym  # noqa: F401  (registers the envs)
from agentgym.envs.webshop.chromium import find_chromium
from agentgym.envs.webshop.data import load_catalogue
from agentgym.envs.webshop.search import SearchEngine

REPO = Path(__file__).resolve().parents[1]
TARGET_STEP_MS, TARGET_SEARCH_MS = 100.0, 5.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def search_latency(data_dir: Path) -> dict:
    catalogue = load_catalogue(data_dir)
    start = time.perf_counter()
    engine = SearchEngine(catalogue.products)
    build_s = time.perf_counter() - start
    queries = [g.instruction.lower() for g in catalogue.goals("synthetic", "test")]
    engine.search(queries[0])
    times = []
    for query in queries:
        start = time.perf_counter()
        engine.search(query)
        times.append((time.perf_counter() - start) * 1000)
    return {
        "products": len(catalogue.products),
        "queries": len(queries),
        "index_build_s": round(build_s, 3),
        "median_ms": round(statistics.median(times), 3),
        "p95_ms": round(percentile(times, 0.95), 3),
    }


def oracle_episode(env, seed: int, step_times: list[float] | None = None) -> bool:
    env.reset(seed=seed)
    done, info = False, {}
    while not done:
        action = env.unwrapped.oracle_action()
        start = time.perf_counter()
        _, _, terminated, truncated, info = env.step(action)
        if step_times is not None:
            step_times.append((time.perf_counter() - start) * 1000)
        done = terminated or truncated
    return bool(info["success"])


def cpu_seconds() -> float:
    """CPU time used so far by this process and its live children (the browser, Playwright's driver)."""
    total = 0.0
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def step_latency(kwargs: dict, episodes: int) -> dict:
    env = gym.make("agentgym/WebShop-v0", **kwargs)
    try:
        for seed in range(2):  # warm up: browser launched, catalogue loaded, first pages rendered
            oracle_episode(env, 1000 + seed)
        reset_times, step_times, wins = [], [], 0
        start, cpu_start = time.perf_counter(), cpu_seconds()
        for seed in range(episodes):
            t = time.perf_counter()
            env.reset(seed=seed)
            reset_times.append((time.perf_counter() - t) * 1000)
            wins += oracle_episode(env, seed, step_times)
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    finally:
        env.close()
    calls = len(step_times) + len(reset_times)
    return {
        "episodes": episodes,
        "oracle_success": wins / episodes,
        "steps": len(step_times),
        "median_step_ms": round(statistics.median(step_times), 1),
        "p95_step_ms": round(percentile(step_times, 0.95), 1),
        "median_reset_ms": round(statistics.median(reset_times), 1),
        # CPU time of every process involved per step or reset: what the wall time would be on idle cores
        "cpu_ms_per_call": round(cpu / calls * 1000, 1),
        "episodes_per_s": round(episodes / elapsed, 2),
    }


def threaded_throughput(kwargs: dict, threads: int, episodes_each: int) -> dict:
    envs = [gym.make("agentgym/WebShop-v0", **kwargs) for _ in range(threads)]
    try:
        for env in envs:
            oracle_episode(env, 999)
        results: list[bool] = []

        def work(index: int) -> None:
            for episode in range(episodes_each):
                results.append(oracle_episode(envs[index], index * 100 + episode))

        start = time.perf_counter()
        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - start
    finally:
        for env in envs:
            env.close()
    return {
        "threads": threads,
        "episodes": len(results),
        "oracle_success": sum(results) / len(results),
        "episodes_per_s": round(len(results) / elapsed, 2),
    }


def _browser_memory_mb() -> float:
    total = 0
    for child in psutil.Process().children(recursive=True):
        try:
            if "chrom" in (child.cmdline() or [""])[0].lower():
                total += child.memory_full_info().pss  # shared pages split among their users
        except psutil.Error:
            continue
    return total / 2**20


def memory_per_env(kwargs: dict, extra_envs: int) -> dict:
    me = psutil.Process()
    first = gym.make("agentgym/WebShop-v0", **kwargs)
    first.reset(seed=0)
    time.sleep(1)
    browser_before, python_before = _browser_memory_mb(), me.memory_info().rss / 2**20
    more = [gym.make("agentgym/WebShop-v0", **kwargs) for _ in range(extra_envs)]
    for seed, env in enumerate(more):
        env.reset(seed=seed)
    time.sleep(1)
    browser_after, python_after = _browser_memory_mb(), me.memory_info().rss / 2**20
    for env in [first, *more]:
        env.close()
    browser_per_env = (browser_after - browser_before) / extra_envs
    python_per_env = (python_after - python_before) / extra_envs
    return {
        "envs_added": extra_envs,
        "browser_total_mb_with_1_env": round(browser_before, 1),
        "browser_mb_per_env": round(browser_per_env, 1),
        "python_mb_per_env": round(python_per_env, 2),
        "total_mb_per_env": round(browser_per_env + python_per_env, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("AGENTGYM_WEBSHOP_DATA", str(REPO.parent / "shared" / "data" / "webshop")),
    )
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "webshop_latency.json"))
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    has_data = (data_dir / "items_shuffle_1000.json").is_file()
    load_before = os.getloadavg()

    results: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "browser": find_chromium(),
            "load_average_at_start": [round(x, 2) for x in load_before],
        },
        "targets": {"median_step_ms": TARGET_STEP_MS, "search_ms": TARGET_SEARCH_MS},
    }
    if has_data:
        results["search_1000_products"] = search_latency(data_dir)
    settings = {"generated": {}}
    if has_data:
        settings["real_1000"] = {"data_dir": str(data_dir)}
    for name, kwargs in settings.items():
        results[f"steps_{name}"] = step_latency(kwargs, args.episodes)
    results[f"threads_{args.threads}_generated"] = threaded_throughput(
        {}, args.threads, max(2, args.episodes // 6)
    )
    results["memory_generated"] = memory_per_env({}, 4)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]

    print(f"{'measure':40s} {'measured':>10s} {'target':>10s} {'measured/target':>16s}")
    rows = [
        (f"median step ms ({n})", results[f"steps_{n}"]["median_step_ms"], TARGET_STEP_MS) for n in settings
    ]
    if has_data:
        rows.append(
            (
                "median search ms (1000 products)",
                results["search_1000_products"]["median_ms"],
                TARGET_SEARCH_MS,
            )
        )
    for label, value, target in rows:
        print(f"{label:40s} {value:10.2f} {target:10.2f} {value / target:16.2f}")
    for name in settings:
        print(
            f"episodes/s, one env ({name}): {results[f'steps_{name}']['episodes_per_s']}; "
            f"CPU ms per step, all processes: {results[f'steps_{name}']['cpu_ms_per_call']}"
        )
    print(
        f"episodes/s, {args.threads} envs in threads: "
        f"{results[f'threads_{args.threads}_generated']['episodes_per_s']}"
    )
    print(f"memory per env: {results['memory_generated']['total_mb_per_env']} MB")
    print(f"browser: {results['machine']['browser']}")
    print(
        f"load average start/end: {results['machine']['load_average_at_start']} / "
        f"{results['machine']['load_average_at_end']} on {os.cpu_count()} CPUs"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
