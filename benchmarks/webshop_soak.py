"""WebShop soak test: 1,000 episodes in one process, memory and throughput as the run goes on.

One env plays ``--episodes`` episodes back to back, each with the scripted oracle or a uniformly random
policy (drawn per episode, half and half), on the generated catalogue (``--data-dir`` for WebShop's
real files). Every ``--sample-every`` episodes it records the proportional set size (PSS) of the whole
process tree, read from ``/proc/<pid>/smaps_rollup`` of this process and every descendant (Playwright's
driver, Chromium and its renderers), split into python / driver / chromium, with the browser's open
contexts and pages, the tree's private memory and the steps per second of the last window. PSS also
moves when processes outside the tree start or stop mapping the same files (another Chromium on the
machine lowers ours); the private memory does not. (With the default 20, a multiple of
``browser.TAB_EPISODES``, every sample falls just before a tab renewal: at the top of the sawtooth.)

Bound: the tree's PSS may grow by at most ``BOUND_MB`` (150 MB) over 1,000 episodes, that is 0.15 MB per
episode, the growth estimated as 1,000 times the least-squares slope of PSS against episodes over the
samples after ``WARMUP_EPISODES`` (50: first-use costs such as the tagger's model and the driver's heap).
A slope rather than last-minus-first, because a healthy run swings by +-100 MB from sample to sample (the
driver's heap between its collections, Python's allocator taking and returning arenas); a fit over ~50
samples measures the trend to about +-30 MB. The script exits with status 1 when the estimate exceeds
the bound, or when fewer than 4 samples follow the warm-up. For scale: with one page serving every
episode (the env before it collected the renderer's garbage and renewed its tab,
``browser.TAB_EPISODES``) this mix grew by 9-12 MB per episode (625 MB -> 4.0 GB in 300 episodes, a
trend of 11.9 GB per 1,000, with steps/s falling from 13 to 5; results/webshop_soak_before_fix.json).

    python benchmarks/webshop_soak.py [--episodes 1000] [--sample-every 20] [--data-dir DIR]
                                      [--max-minutes M]

``--max-minutes`` stops early (between episodes) and records how many episodes ran. Writes
benchmarks/results/webshop_soak.json and webshop_soak.png (PSS against episodes; matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import psutil

import agentgym  # noqa: F401  (registers the envs)
from agentgym.envs.webshop.chromium import find_chromium
from agentgym.envs.webshop.env import WebShopEnv

REPO = Path(__file__).resolve().parents[1]
BOUND_MB = 150.0  # per 1,000 episodes
BOUND_EPISODES = 1000
WARMUP_EPISODES = 50
MB = 1024.0  # smaps_rollup counts kB


def role(process: psutil.Process) -> str:
    """python (this process), driver (Playwright's Node.js) or chromium (browser, renderers, helpers)."""
    if process.pid == os.getpid():
        return "python"
    try:
        command = process.cmdline()
    except psutil.Error:
        return "other"
    if "run-driver" in command:
        return "driver"
    if command and "chrom" in os.path.basename(command[0]).lower():
        return "chromium"
    return "other"


def rollup_kb(pid: int) -> tuple[int, int] | None:
    """(PSS, private) of the process in kB from its smaps_rollup, or None if it has exited. PSS splits
    each shared page among the processes that map it; private counts pages no other process maps."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                name, _, rest = line.partition(":")
                if name in ("Pss", "Private_Clean", "Private_Dirty"):
                    fields[name] = int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if "Pss" not in fields:
        return None
    return fields["Pss"], fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)


def tree_memory() -> dict[str, float]:
    """PSS in MB of this process and all its descendants (the total and by role), their private memory,
    and the process count."""
    me = psutil.Process()
    by_role: dict[str, float] = {"python": 0.0, "driver": 0.0, "chromium": 0.0, "other": 0.0}
    private = 0.0
    processes = 0
    for process in [me, *me.children(recursive=True)]:
        sizes = rollup_kb(process.pid)
        if sizes is None:
            continue
        by_role[role(process)] += sizes[0] / MB
        private += sizes[1] / MB
        processes += 1
    return {
        "pss_mb": round(sum(by_role.values()), 1),
        **{f"{name}_mb": round(value, 1) for name, value in by_role.items()},
        "private_mb": round(private, 1),
        "processes": processes,
    }


def play(env, policy: str, seed: int, rng: np.random.Generator) -> tuple[int, float, bool]:
    """One episode; returns (steps, reward, aborted)."""
    env.reset(seed=seed)
    steps, total, done, info = 0, 0.0, False, {}
    while not done:
        action = env.oracle_action() if policy == "oracle" else env.random_action(rng)
        _, reward, terminated, truncated, info = env.step(action)
        steps, total, done = steps + 1, total + float(reward), terminated or truncated
    return steps, total, bool(info.get("aborted"))


def trend_per_1000(samples: list[dict], key: str = "pss_mb") -> float | None:
    """1,000 times the least-squares slope of ``key`` against episodes after the warm-up (MB), or None
    with fewer than 4 samples there."""
    settled = [s for s in samples if s["episode"] >= WARMUP_EPISODES]
    if len(settled) < 4:
        return None
    slope = np.polyfit([s["episode"] for s in settled], [s[key] for s in settled], 1)[0]
    return round(1000 * float(slope), 1)


def plot(samples: list[dict], bound: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes = [s["episode"] for s in samples]
    figure, axes = plt.subplots(figsize=(8, 4.5))
    axes.plot(episodes, [s["pss_mb"] for s in samples], label="whole tree", linewidth=2)
    for name in ("python", "driver", "chromium"):
        axes.plot(episodes, [s[f"{name}_mb"] for s in samples], label=name, linewidth=1)
    settled = [s for s in samples if s["episode"] >= WARMUP_EPISODES]
    if len(settled) >= 2:  # the fitted trend, and the steepest trend the bound allows from the same start
        x = np.array([s["episode"] for s in settled], dtype=float)
        slope, intercept = np.polyfit(x, [s["pss_mb"] for s in settled], 1)
        axes.plot(x, intercept + slope * x, color="black", linestyle=":", linewidth=1, label="trend")
        axes.plot(x, intercept + bound / 1000 * x, color="red", linestyle="--", linewidth=1, label="bound")
    axes.set_xlabel("episodes")
    axes.set_ylabel("PSS (MB)")
    axes.set_ylim(bottom=0)
    axes.set_title(title)
    axes.legend(loc="center right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=BOUND_EPISODES)
    parser.add_argument("--sample-every", type=int, default=20)
    parser.add_argument("--data-dir", default=None, help="WebShop's real files (default: generated)")
    parser.add_argument("--oracle-share", type=float, default=0.5, help="share of oracle episodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=None, help="stop early after this long")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "webshop_soak.json"))
    args = parser.parse_args()
    if args.episodes < 1 or args.sample_every < 1 or not 0.0 <= args.oracle_share <= 1.0:
        parser.error("--episodes and --sample-every must be positive, --oracle-share in [0, 1]")
    if not Path("/proc/self/smaps_rollup").is_file():
        parser.error("needs Linux's /proc/<pid>/smaps_rollup to measure PSS")
    if args.data_dir is not None and not (Path(args.data_dir) / "items_shuffle_1000.json").is_file():
        parser.error(f"{args.data_dir} has no items_shuffle_1000.json")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(args.seed)
    kwargs = {"data_dir": args.data_dir} if args.data_dir else {}
    env = gym.make("agentgym/WebShop-v0", **kwargs).unwrapped
    assert isinstance(env, WebShopEnv)
    load_before = os.getloadavg()
    samples: list[dict] = []
    counts = {"oracle": 0, "random": 0}
    successes = {"oracle": 0, "random": 0}
    aborted = total_steps = window_steps = 0
    start = window_start = time.perf_counter()
    episode = 0

    def take_sample() -> None:
        nonlocal window_steps, window_start
        now = time.perf_counter()
        contexts = env.host.browser.contexts if env.host.browser is not None else []
        sample = {
            "episode": episode,
            "elapsed_s": round(now - start, 1),
            **tree_memory(),
            "contexts": len(contexts),  # the browser's, for every env of the process (one here)
            "pages": sum(len(c.pages) for c in contexts),
            "steps_per_s": round(window_steps / (now - window_start), 2) if window_steps else None,
        }
        samples.append(sample)
        window_steps, window_start = 0, now
        print(json.dumps(sample), flush=True)

    try:
        while True:
            out_of_time = args.max_minutes is not None and time.perf_counter() - start > 60 * args.max_minutes
            if episode % args.sample_every == 0 or episode == args.episodes or out_of_time:
                take_sample()
            if episode == args.episodes:
                break
            if out_of_time:
                print(f"stopping after {episode} episodes: --max-minutes {args.max_minutes}", flush=True)
                break
            policy = "oracle" if rng.random() < args.oracle_share else "random"
            steps, reward, was_aborted = play(env, policy, seed=args.seed * 100_000 + episode, rng=rng)
            counts[policy] += 1
            successes[policy] += int(reward >= 1.0 - 1e-9)
            aborted += was_aborted
            total_steps += steps
            window_steps += steps
            episode += 1
        elapsed = time.perf_counter() - start
        # (driver_launches: absent from builds before the driver check, which this script also measures)
        launches = {"browser": env.host.launches, "driver": getattr(env.host, "driver_launches", None)}
    finally:
        env.close()

    growth = trend_per_1000(samples)
    settled = [s for s in samples if s["episode"] >= WARMUP_EPISODES] or samples
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "browser": find_chromium(),
            "load_average_at_start": [round(x, 2) for x in load_before],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "catalogue": args.data_dir or "generated",
        "episodes_requested": args.episodes,
        "episodes": episode,
        "complete": episode == args.episodes,
        "episodes_by_policy": counts,
        "success_by_policy": successes,
        "aborted_episodes": aborted,
        "launches": launches,
        "steps": total_steps,
        "elapsed_s": round(elapsed, 1),
        "steps_per_s": round(total_steps / elapsed, 2),
        "episodes_per_s": round(episode / elapsed, 3),
        "warmup_episodes": WARMUP_EPISODES,
        "pss_start_mb": samples[0]["pss_mb"],
        "pss_end_mb": samples[-1]["pss_mb"],
        "pss_max_mb": max(s["pss_mb"] for s in samples),
        "pss_after_warmup_min_mb": min(s["pss_mb"] for s in settled),
        "pss_after_warmup_max_mb": max(s["pss_mb"] for s in settled),
        "growth_trend_mb_per_1000_episodes": growth,
        "private_growth_trend_mb_per_1000_episodes": trend_per_1000(samples, "private_mb"),
        "bound_mb_per_1000_episodes": BOUND_MB,
        "within_bound": growth is not None and growth <= BOUND_MB,
        "samples": samples,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    catalogue = "real 1000-product" if args.data_dir else "generated"
    plot(
        samples, BOUND_MB, out.with_suffix(".png"), f"WebShop soak: {episode} episodes, {catalogue} catalogue"
    )
    print(
        f"{episode} episodes, {total_steps} steps in {elapsed:.0f} s ({total_steps / elapsed:.2f} steps/s); "
        f"PSS {samples[0]['pss_mb']:.0f} -> {samples[-1]['pss_mb']:.0f} MB, trend after warm-up "
        f"{growth} MB per 1,000 episodes (bound {BOUND_MB:.0f} MB); wrote {out}"
    )
    if growth is None:
        print("too few samples after the warm-up to judge the bound", file=sys.stderr)
        return 1
    if growth > BOUND_MB:
        print(
            f"memory grows by {growth} MB per 1,000 episodes, over the bound of {BOUND_MB:.0f} MB",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
