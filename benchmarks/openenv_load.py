"""Load test of ``agentgym serve`` on 127.0.0.1: N WebSocket sessions playing oracle episodes at once.

    python benchmarks/openenv_load.py [--envs ID ...] [--sessions 1 8 32 64] [--seconds 8] [--hold 256]

For each environment the server runs in its own process (``python -m agentgym.cli serve``); the clients are
asyncio WebSocket connections in this process, each replaying oracle episodes recorded beforehand from the
local environment (and checking that every reward matches). Measured per N: sessions the server held at
once, steps/s and episodes/s over all sessions, p50/p99 latency of one step (send to answer), the server's
RSS with the N environments alive, and the same episodes stepped in-process for the ratio. ``--hold`` opens
that many idle sessions at once to measure memory per session at scale. Writes
benchmarks/results/openenv_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import gymnasium as gym
from websockets.asyncio.client import connect

import agentgym  # noqa: F401  (registers the environments)

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "openenv_load.json"


def record_episodes(env_id: str, seeds: int) -> list[dict]:
    """The oracle's responses and the rewards they earn, per seed, played locally."""
    env = gym.make(env_id)
    agent_env: Any = env.unwrapped  # an agentgym env: it has an oracle
    episodes = []
    for seed in range(seeds):
        env.reset(seed=seed)
        responses, rewards, done = [], [], False
        while not done:
            response = agent_env.oracle_action()
            _, reward, terminated, truncated, _ = env.step(response)
            responses.append(response)
            rewards.append(reward)
            done = terminated or truncated
        episodes.append({"seed": seed, "responses": responses, "rewards": rewards})
    env.close()
    return episodes


def local_rate(env_id: str, episodes: list[dict], seconds: float) -> dict:
    """Steps/s of the same episodes stepped in this process (reset included, as over the wire)."""
    env = gym.make(env_id)
    steps = played = 0
    start, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        episode = episodes[played % len(episodes)]
        env.reset(seed=episode["seed"])
        for response in episode["responses"]:
            env.step(response)
        steps += len(episode["responses"])
        played += 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    env.close()
    return {
        "steps_per_s": steps / elapsed,
        "episodes_per_s": played / elapsed,
        "cpu_ms_per_step": 1000 * cpu / steps,
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())


def start_server(env_id: str, max_sessions: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentgym.cli", "serve", "--env", env_id, "--port", "0"]
        + ["--max-sessions", str(max_sessions), "--idle-timeout", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if " on http://" not in line:
        proc.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return proc, line.split(" on ")[1].split()[0]


async def ask(ws, message: dict) -> dict:
    await ws.send(json.dumps(message))
    answer = json.loads(await ws.recv())
    if answer["type"] == "error":
        raise RuntimeError(answer["data"])
    return answer["data"]


async def play(
    ws, episodes: list[dict], first: int, stride: int, stop: float, latencies: list, reset_latencies: list
) -> dict:
    steps = played = mismatches = 0
    index = first
    while time.perf_counter() < stop:
        episode = episodes[index % len(episodes)]
        t0 = time.perf_counter()
        await ask(ws, {"type": "reset", "data": {"seed": episode["seed"]}})
        reset_latencies.append(time.perf_counter() - t0)
        for response, expected in zip(episode["responses"], episode["rewards"], strict=True):
            t0 = time.perf_counter()
            result = await ask(ws, {"type": "step", "data": {"response": response}})
            latencies.append(time.perf_counter() - t0)
            mismatches += result["reward"] != expected
        steps += len(episode["responses"])
        played += 1
        index += stride
    return {"steps": steps, "episodes": played, "mismatches": mismatches}


async def load(url: str, pid: int, sessions: int, episodes: list[dict], seconds: float) -> dict:
    ws_url = url.replace("http://", "ws://") + "/ws"
    rss_before = rss_mb(pid)
    sockets = [await connect(ws_url, max_size=64 << 20) for _ in range(sessions)]
    for ws in sockets:  # every session answers: its environment is built
        await ask(ws, {"type": "state"})
    held = get_json(f"{url}/sessions")["active_sessions"]
    rss_held = rss_mb(pid)
    latencies: list[float] = []
    reset_latencies: list[float] = []
    server_cpu, client_cpu = cpu_s(pid), time.process_time()
    start = time.perf_counter()
    stop = start + seconds
    results = await asyncio.gather(
        *(play(ws, episodes, i, sessions, stop, latencies, reset_latencies) for i, ws in enumerate(sockets))
    )
    elapsed = time.perf_counter() - start
    server_cpu, client_cpu = cpu_s(pid) - server_cpu, time.process_time() - client_cpu
    rss_played = rss_mb(pid)
    for ws in sockets:
        await ws.close()
    steps = sum(r["steps"] for r in results)
    latencies.sort()
    return {
        "sessions": sessions,
        "sessions_held_at_once": held,
        "steps": steps,
        "episodes": sum(r["episodes"] for r in results),
        "reward_mismatches": sum(r["mismatches"] for r in results),
        "steps_per_s": steps / elapsed,
        "episodes_per_s": sum(r["episodes"] for r in results) / elapsed,
        "step_latency_ms_p50": 1000 * statistics.median(latencies),
        "step_latency_ms_p99": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "step_latency_ms_mean": 1000 * statistics.mean(latencies),
        "reset_latency_ms_p50": 1000 * statistics.median(reset_latencies),
        # CPU per step (its reset included) is what the shared cores cannot blur
        "server_cpu_ms_per_step": 1000 * server_cpu / steps,
        "client_cpu_ms_per_step": 1000 * client_cpu / steps,
        "server_rss_mb_idle": rss_before,
        "server_rss_mb_with_sessions": rss_held,
        "server_rss_mb_after_play": rss_played,
        "server_rss_mb_per_session": (rss_held - rss_before) / sessions,
    }


async def hold(url: str, pid: int, sessions: int) -> dict:
    ws_url = url.replace("http://", "ws://") + "/ws"
    rss_before = rss_mb(pid)
    start = time.perf_counter()
    sockets = [await connect(ws_url) for _ in range(sessions)]
    for ws in sockets:
        await ask(ws, {"type": "reset", "data": {"seed": 0}})
    opened = time.perf_counter() - start
    held = get_json(f"{url}/sessions")["active_sessions"]
    rss_held = rss_mb(pid)
    for ws in sockets:
        await ws.close()
    await asyncio.sleep(1.0)
    return {
        "sessions": sessions,
        "sessions_held_at_once": held,
        "open_and_reset_s": opened,
        "server_rss_mb_idle": rss_before,
        "server_rss_mb_with_sessions": rss_held,
        "server_rss_mb_per_session": (rss_held - rss_before) / sessions,
        "sessions_after_close": get_json(f"{url}/sessions")["active_sessions"],
    }


def bench_env(env_id: str, counts: list[int], seconds: float, hold_count: int) -> dict:
    episodes = record_episodes(env_id, seeds=256)
    local = local_rate(env_id, episodes, seconds)
    print(f"{env_id}: local {local['steps_per_s']:.0f} steps/s", flush=True)
    proc, url = start_server(env_id, max(max(counts), hold_count))
    try:
        runs = []
        for n in counts:
            run = asyncio.run(load(url, proc.pid, n, episodes, seconds))
            run["remote_over_local_steps_per_s"] = run["steps_per_s"] / local["steps_per_s"]
            run["server_cpu_over_local_cpu"] = run["server_cpu_ms_per_step"] / local["cpu_ms_per_step"]
            runs.append(run)
            print(
                f"  {n:3d} sessions: {run['steps_per_s']:7.0f} steps/s, "
                f"p50 {run['step_latency_ms_p50']:.2f} ms, p99 {run['step_latency_ms_p99']:.2f} ms, "
                f"{run['server_rss_mb_per_session']:.2f} MB/session",
                flush=True,
            )
        held = asyncio.run(hold(url, proc.pid, hold_count)) if hold_count else None
        if held:
            print(
                f"  held {held['sessions_held_at_once']} idle sessions, "
                f"{held['server_rss_mb_per_session']:.2f} MB each"
            )
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    mean_turns = statistics.mean(len(e["responses"]) for e in episodes)
    return {"local_in_process": local, "mean_steps_per_episode": mean_turns, "load": runs, "hold_idle": held}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="*", default=["agentgym/FrozenLake-v0", "agentgym/Sokoban-v0"])
    parser.add_argument("--sessions", nargs="*", type=int, default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=float, default=8.0, help="play time per session count")
    parser.add_argument("--hold", type=int, default=256, help="idle sessions opened at once (0: skip)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()

    results = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "note": (
            "2 cores shared with up to 8 other jobs (see load_average_*); the server (one process) and "
            "the clients (asyncio in the benchmark process) share them, so steps/s and latencies are a "
            "floor. CPU per step (server_cpu_ms_per_step, beside the local env's cpu_ms_per_step) is what"
            " the load blurs least. RSS per session: FrozenLake and Sokoban environments are small; a "
            "browser or sandbox env costs far more."
        ),
        "date": time.strftime("%Y-%m-%d"),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "seconds_per_count": args.seconds,
        "envs": {env_id: bench_env(env_id, args.sessions, args.seconds, args.hold) for env_id in args.envs},
    }
    results["load_average_at_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
