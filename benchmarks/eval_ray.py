"""``agentgym eval --ray`` against ``--workers 1`` and ``--workers 2`` on the same machine: episodes/s.

    python benchmarks/eval_ray.py [--address HOST:PORT]

Without ``--address`` it starts a one-node Ray cluster of its own (``ray start --head --num-cpus 2`` in a
temporary directory, ports of its own) and stops it at the end; the cluster's start is not timed. Each
route is a fresh ``agentgym eval`` process, as a user runs it: ``wall_s`` includes start-up (Python,
imports; for Ray, connecting and the new job's worker processes), ``play_s`` is the summary's
``elapsed_s`` (playing the episodes only). ``--ray, warm job`` plays the workload a second time from one
driver connected to the cluster (this process), once its worker processes are up (tasks reuse them;
actors start anew per run): the cost of Ray itself per episode, without a job's start.

Workloads: FrozenLake with the oracle and the random policy and Sokoban with the oracle (milliseconds per
episode: overhead dominates), and CodeExec with the oracle (a sandboxed run per submission: Ray plays it
in actors that keep their sandboxes). The summaries of a workload's routes are checked to agree. Results
go to ``benchmarks/results/eval_ray.json`` with the load average, since the CPUs are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "eval_ray.json"
REPO = Path(__file__).resolve().parents[1]
MEASURED = ("episodes", "aborted", "success_rate", "mean_return", "format_valid_rate", "mean_turns")
WORKLOADS = [  # env, policy, episodes
    ("agentgym/FrozenLake-v0", "oracle", 400),
    ("agentgym/FrozenLake-v0", "random", 400),
    ("agentgym/Sokoban-v0", "oracle", 200),
    ("agentgym/CodeExec-v0", "oracle", 40),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_cluster(temp_dir: Path, cpus: int) -> tuple[subprocess.Popen, str]:
    """A one-node Ray cluster on 127.0.0.1 with ports of its own (others may run Ray on this machine)."""
    port = free_port()
    ports = [
        f"--{name}={free_port()}"
        for name in (
            "node-manager-port",
            "object-manager-port",
            "metrics-export-port",
            "dashboard-port",
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
        )
    ]
    command = [str(shutil.which("ray")), "start", "--head", "--block", f"--port={port}"]
    command += ["--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--include-dashboard=false"]
    command += ["--disable-usage-stats", f"--temp-dir={temp_dir}", *ports]
    with (temp_dir / "head.log").open("wb") as log:
        head = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    from agentgym.errors import UsageError
    from agentgym.integrations.ray import check_answers

    deadline = time.monotonic() + 120
    while True:
        try:
            check_answers(address, timeout=1)
            break
        except UsageError:
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not start; see {temp_dir / 'head.log'}") from None
            time.sleep(0.5)
    time.sleep(2)  # the raylet registers after the GCS answers
    return head, address


def stop_cluster(head: subprocess.Popen) -> None:
    head.terminate()  # `ray start --block` stops its processes on SIGTERM
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        head.kill()
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_eval(out: Path, env_id: str, policy: str, episodes: int, route: list[str]) -> tuple[float, dict]:
    command = [sys.executable, "-m", "agentgym.cli", "eval", "--env", env_id, "--policy", policy]
    command += ["--episodes", str(episodes), "--out", str(out), "--no-progress", "--no-diagnostics", *route]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return wall, json.loads((out / "summary.json").read_text())


def play_warm(tmp: Path, address: str, env_id: str, policy: str, episodes: int) -> dict:
    """The summary of the workload's second run from this process's Ray job (the first starts its
    worker processes and, for actors, their environments)."""
    from agentgym.eval.runner import evaluate
    from agentgym.integrations.ray import RayExecutor

    name = f"{env_id.split('/')[1]}-{policy}-warm"
    with RayExecutor(address) as executor:
        for attempt in ("first", "second"):
            summary = evaluate(
                env_id, policy, episodes, out=tmp / f"{name}-{attempt}", progress=False, executor=executor
            )
    return summary


def run_workload(tmp: Path, address: str, env_id: str, policy: str, episodes: int) -> dict:
    routes = {
        "--workers 1": ["--workers", "1"],
        "--workers 2": ["--workers", "2"],
        "--ray": ["--ray", address],
    }
    rows, summaries = {}, {}
    for name, route in routes.items():
        out = tmp / f"{env_id.split('/')[1]}-{policy}-{name.strip('-').replace(' ', '')}"
        wall, summary = run_eval(out, env_id, policy, episodes, route)
        summaries[name] = summary
        rows[name] = {
            "wall_s": round(wall, 2),
            "episodes_per_s": round(episodes / wall, 2),
            "play_s": summary["elapsed_s"],
            "play_episodes_per_s": round(episodes / summary["elapsed_s"], 2),
        }
        if "executor" in summary:
            rows[name]["executor"] = summary["executor"]
    summaries["--ray, warm job"] = play_warm(tmp, address, env_id, policy, episodes)
    play_s = summaries["--ray, warm job"]["elapsed_s"]
    rows["--ray, warm job"] = {"play_s": play_s, "play_episodes_per_s": round(episodes / play_s, 2)}
    reference = {k: summaries["--workers 1"][k] for k in MEASURED}
    result = {
        "env": env_id,
        "policy": policy,
        "episodes": episodes,
        "routes": rows,
        "ray_over_workers_1": round(rows["--workers 1"]["wall_s"] / rows["--ray"]["wall_s"], 2),
        "ray_over_workers_2": round(rows["--workers 2"]["wall_s"] / rows["--ray"]["wall_s"], 2),
        "summaries_agree": all({k: s[k] for k in MEASURED} == reference for s in summaries.values()),
        "summary": reference,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"{env_id} {policy} x {episodes}")
    for name, row in rows.items():
        wall = " " * 28
        if "wall_s" in row:
            wall = f"{row['wall_s']:7.2f}s wall {row['episodes_per_s']:8.2f} ep/s"
        print(f"  {name:16s} {wall}   {row['play_s']:7.2f}s playing {row['play_episodes_per_s']:8.2f} ep/s")
    print(f"  summaries agree: {result['summaries_agree']}; load {result['load_average_after']}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default=None, help="an existing Ray cluster (default: start one)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the cluster started here")
    args = parser.parse_args()
    result: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "note": "2 cores shared with other jobs (see load_average_after)",
        },
        "ray_version": __import__("ray").__version__,
        "cluster": args.address or f"one node started here, --num-cpus {args.cpus}",
        "workloads": [],
    }
    if not args.address:  # a cluster of our own, without token authentication (see tests/test_ray_eval.py)
        os.environ["RAY_AUTH_MODE"] = "disabled"
    with tempfile.TemporaryDirectory(prefix="agr-bench-", dir="/tmp") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "ray").mkdir()
        head, address = (None, args.address) if args.address else start_cluster(tmp / "ray", args.cpus)
        try:
            for env_id, policy, episodes in WORKLOADS:
                result["workloads"].append(run_workload(tmp, address, env_id, policy, episodes))
        finally:
            if head is not None:
                stop_cluster(head)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
