"""Runs per second of sandboxed Python against plain ``subprocess.run(["python3", "-c", ...])``.

Two programs (a trivial one and a CPU-bound one of roughly 20-40 ms) go through every available
backend, and through the baseline in the same process, in interleaved rounds (so that load from other
work on the machine hits all of them alike); each figure is the median over rounds. Two ways of
calling: one caller after another ("sequential"), and ``--threads`` callers at once ("concurrent").
bwrap is measured in its default mode (a fork server) and in its one-sandbox-per-run mode, with and
without a pool of pre-started sandboxes; docker (a fresh container per run) when an engine answers and
the image exists (``sandboxes/ci-docker.sh`` sets both up), else it is listed under skipped_backends
with the reason.

    python benchmarks/sandbox_throughput.py [--seconds 2] [--rounds 3] [--threads 4]

Writes benchmarks/results/sandbox_throughput.json (``--out`` elsewhere); sandbox_throughput_nonroot.json
there is the same run by an unprivileged user (bwrap then works in user namespaces).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from agentgym.sandbox import Sandbox, unavailable_reason

PROGRAMS = {
    "trivial": "print('hello')",
    "cpu_bound": "total = 0\nfor i in range(300_000):\n    total += i * i\nprint(total)",
}
RESULTS = Path(__file__).resolve().parent / "results" / "sandbox_throughput.json"


def rate(call: Callable[[], None], seconds: float, threads: int) -> float:
    """Calls per second of ``call`` made by ``threads`` callers for about ``seconds``."""
    done = [0] * threads
    stop = time.perf_counter() + seconds

    def loop(slot: int) -> None:
        while time.perf_counter() < stop:
            call()
            done[slot] += 1

    start = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(slot,)) for slot in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / (time.perf_counter() - start)


def plain(argv_prefix: list[str], code: str) -> Callable[[], None]:
    def call() -> None:
        done = subprocess.run([*argv_prefix, code], capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr

    return call


def sandboxed(box: Sandbox, code: str) -> Callable[[], None]:
    def call() -> None:
        result = box.run(code)
        assert result.exit_code == 0, result

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is kept")
    parser.add_argument("--threads", type=int, default=4, help="callers in the concurrent mode")
    parser.add_argument("--pool-size", type=int, default=4, help="pre-started workers of the pooled modes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_at_start = os.getloadavg()  # other work on the machine shares its cores

    boxes: dict[str, Sandbox] = {}
    skipped: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the subprocess backend's "not isolation" warning
        if (reason := unavailable_reason("bwrap")) is None:
            boxes["bwrap (fork server, the default)"] = Sandbox("bwrap", timeout=30)
            boxes["bwrap, one sandbox per run"] = Sandbox("bwrap", timeout=30, pool_size=0, fork_server=False)
            boxes["bwrap, one per run, pre-started pool"] = Sandbox(
                "bwrap", timeout=30, pool_size=args.pool_size, fork_server=False
            )
        else:
            skipped["bwrap"] = reason
        if (reason := unavailable_reason("docker")) is None:
            boxes["docker (a fresh container per run)"] = Sandbox("docker", timeout=30)
        else:
            skipped["docker"] = reason
        boxes["subprocess"] = Sandbox("subprocess", timeout=30, pool_size=0)
        boxes["subprocess+pool"] = Sandbox("subprocess", timeout=30, pool_size=args.pool_size)

    runners: dict[str, Callable[[str], Callable[[], None]]] = {
        "plain python3 -c (baseline)": lambda code: plain(["python3", "-c"], code),
        # `python3` may be a wrapper (a pyenv shim here); the interpreter it ends in, started directly:
        "plain python3 -c, the interpreter itself": lambda code: plain(
            [os.path.realpath(sys.executable), "-c"], code
        ),
        "plain python -I -S -c (no isolation, reference)": lambda code: plain(
            [os.path.realpath(sys.executable), "-I", "-S", "-c"], code
        ),
    }
    for name, box in boxes.items():
        runners[name] = functools.partial(sandboxed, box)

    modes = {"sequential": 1, "concurrent": args.threads}
    samples: dict[tuple[str, str, str], list[float]] = {}
    for round_index in range(args.rounds):
        for program, code in PROGRAMS.items():
            for mode, threads in modes.items():
                for name, runner in runners.items():
                    call = runner(code)
                    call()  # warm up (and fill a pool)
                    time.sleep(0.2)
                    value = rate(call, args.seconds, threads)
                    samples.setdefault((program, mode, name), []).append(value)
                    print(
                        f"round {round_index + 1} {program:9} {mode:10} {name:48} {value:7.1f} runs/s",
                        flush=True,
                    )
    for box in boxes.values():
        box.close()

    table: dict = {}
    for (program, mode, name), values in samples.items():
        table.setdefault(program, {}).setdefault(mode, {})[name] = {
            "runs_per_s": round(statistics.median(values), 1),
            "rounds": [round(v, 1) for v in values],
        }
    for by_mode in table.values():
        for entries in by_mode.values():
            base = entries["plain python3 -c (baseline)"]["runs_per_s"]
            for entry in entries.values():
                entry["ratio_vs_baseline"] = round(entry["runs_per_s"] / base, 2)

    print("\nmedian runs/s (ratio against plain python3 -c in the same mode)")
    for program, by_mode in table.items():
        for mode, entries in by_mode.items():
            print(f"{program} / {mode}:")
            for name, entry in entries.items():
                print(f"  {name:48} {entry['runs_per_s']:7.1f}  x{entry['ratio_vs_baseline']:.2f}")

    report = {
        "benchmark": "sandbox_throughput",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
            "user": "root" if os.geteuid() == 0 else "non-root",
        },
        "baseline_python3": shutil.which("python3"),
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "threads": args.threads,
            "pool_size": args.pool_size,
            "programs": PROGRAMS,
        },
        "skipped_backends": skipped,
        "results": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
