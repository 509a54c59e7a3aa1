"""Sokoban room generation: our generator against gym-sokoban's, side by side, in one run.

    python benchmarks/sokoban_generation.py [--gym-sokoban-python PATH] [--rooms N] [--gym-rooms N]

gym-sokoban needs an old ``gym`` and ``setuptools<81``, so it lives in its own virtual environment and runs
in a subprocess with a small timing loop around its ``generate_room(dim, num_steps, num_boxes)``:

    python -m venv /tmp/gymsok-venv
    /tmp/gymsok-venv/bin/pip install "setuptools<81" wheel
    /tmp/gymsok-venv/bin/pip install --no-deps gym-sokoban "gym==0.26.2" cloudpickle gym_notices "numpy<2" \
        imageio tqdm requests

Both generators get the same room size, box count and topology walk length (gym-sokoban's default,
int(1.7 * (rows + cols)) steps). They do not do the same search: gym-sokoban plays a depth-first reverse
search without bounding the solution length, so some of its rooms need more actions than an episode allows;
ours searches breadth-first to the action budget and guarantees an optimal solution within it. Ours is
timed at the env's default budget (10 actions) and at 30. Every room of ours is re-solved here by the
forward solver, which must agree with the generator's optimal length and fit the budget.

Times are per room, CPU time of the generating process (the machine is shared, so wall time is noisier;
it is recorded too). gym-sokoban's rooms are solved too, to show how many fit the default budget.
Results go to benchmarks/results/sokoban_generation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from agentgym.envs.sokoban import Room, generate_room, solve

CONFIGS = [((6, 6), 1), ((8, 8), 2), ((10, 10), 3)]
BUDGETS = (10, 30)
DEFAULT_VENV_PYTHON = os.environ.get("GYM_SOKOBAN_PYTHON", "/tmp/gymsok-venv/bin/python")
RESULTS = Path(__file__).resolve().parent / "results" / "sokoban_generation.json"

# Runs inside gym-sokoban's virtual environment; prints one JSON line.
GYM_SOKOBAN_LOOP = r"""
import json, random, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
from gym_sokoban.envs.room_utils import generate_room

rows, cols, num_boxes, rooms, seed = (int(a) for a in sys.argv[1:6])
random.seed(seed)
np.random.seed(seed)
num_steps = int(1.7 * (rows + cols))
cpu, wall, failures, generated = [], [], 0, []
for _ in range(rooms):
    c0, w0 = time.process_time(), time.perf_counter()
    while True:  # gym-sokoban's env also retries when a room scores 0
        try:
            structure, state, _ = generate_room(dim=(rows, cols), num_steps=num_steps, num_boxes=num_boxes)
            break
        except (RuntimeError, RuntimeWarning):
            failures += 1
    cpu.append(time.process_time() - c0)
    wall.append(time.perf_counter() - w0)
    generated.append([structure.astype(int).tolist(), state.astype(int).tolist()])
print(json.dumps({"cpu": cpu, "wall": wall, "failures": failures, "rooms": generated}))
"""


def time_ours(dim: tuple[int, int], num_boxes: int, budget: int, rooms: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    cpu, wall, generated = [], [], []
    for _ in range(rooms):
        c0, w0 = time.process_time(), time.perf_counter()
        room = generate_room(rng, dim, num_boxes, budget)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        generated.append(room)
    # Check every room outside the timed loop: the forward solver must agree with the generator.
    lengths = []
    for room in generated:
        plan = solve(room)
        if plan is None or len(plan) != room.optimal_length or not 0 < len(plan) <= budget:
            raise AssertionError(f"room not solvable within {budget} actions:\n{room.render()}")
        lengths.append(len(plan))
    return {
        **_summary(cpu, wall),
        "rooms": rooms,
        "all_solvable_within_budget": True,
        "optimal_length_mean": statistics.fmean(lengths),
        "optimal_length_max": max(lengths),
    }


def time_gym_sokoban(python: str, dim: tuple[int, int], num_boxes: int, rooms: int, seed: int) -> dict:
    args = [python, "-c", GYM_SOKOBAN_LOOP, str(dim[0]), str(dim[1]), str(num_boxes), str(rooms), str(seed)]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # How many of its rooms could a perfect agent solve within our default budget? Solve them to see.
    lengths = [_optimal_length(structure, state) for structure, state in result["rooms"]]
    return {
        **_summary(result["cpu"], result["wall"]),
        "rooms": rooms,
        "score_zero_retries": result["failures"],
        "solvable_within_10_actions": sum(n is not None and n <= 10 for n in lengths) / len(lengths),
        "optimal_length_mean": statistics.fmean(n for n in lengths if n is not None),
        "optimal_length_max": max(n for n in lengths if n is not None),
    }


def _optimal_length(structure: list[list[int]], state: list[list[int]]) -> int | None:
    """Optimal solution length of a gym-sokoban room (structure: 0 wall, 2 target; state: 3/4 box,
    5 player)."""
    lines = []
    for fixed_row, state_row in zip(structure, state, strict=True):
        line = ""
        for fixed, cell in zip(fixed_row, state_row, strict=True):
            target = fixed == 2
            if fixed == 0:
                line += "#"
            elif cell == 5:
                line += "S" if target else "P"
            elif cell in (3, 4):
                line += "√" if target else "X"
            else:
                line += "O" if target else "_"
        lines.append(line)
    plan = solve(Room.from_text("\n".join(lines)))
    return None if plan is None else len(plan)


def _summary(cpu: list[float], wall: list[float]) -> dict:
    return {
        "cpu_ms_mean": 1000 * statistics.fmean(cpu),
        "cpu_ms_median": 1000 * statistics.median(cpu),
        "wall_ms_mean": 1000 * statistics.fmean(wall),
    }


def gym_sokoban_available(python: str) -> bool:
    if not Path(python).exists():
        return False
    check = subprocess.run([python, "-c", "import gym_sokoban.envs.room_utils"], capture_output=True)
    return check.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gym-sokoban-python",
        default=DEFAULT_VENV_PYTHON,
        help="python of the virtual environment holding gym-sokoban (env GYM_SOKOBAN_PYTHON)",
    )
    parser.add_argument("--rooms", type=int, default=200, help="rooms per configuration for our generator")
    parser.add_argument(
        "--gym-rooms",
        type=int,
        nargs=3,
        default=(200, 40, 15),
        help="rooms per configuration for gym-sokoban (6x6/1, 8x8/2, 10x10/3)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    have_gym = gym_sokoban_available(args.gym_sokoban_python)
    if not have_gym:
        print(f"gym-sokoban not available at {args.gym_sokoban_python}: only our generator is timed.")
        print("Install it in its own virtual environment (see the top of this file), then pass")
        print("--gym-sokoban-python /tmp/gymsok-venv/bin/python or set GYM_SOKOBAN_PYTHON.\n")

    rows = []
    header = (
        f"{'room':>10} | {'gym-sokoban':>12} | "
        + " | ".join(f"{f'ours @{b}':>10} {'ratio':>7}" for b in BUDGETS)
        + " | gym <=10"
    )
    print("CPU ms per room (mean); ratio = gym-sokoban / ours; 'ours @B': budget of B actions;")
    print("'gym <=10': share of gym-sokoban's rooms whose optimal solution fits 10 actions (ours: all)")
    print(header)
    print("-" * len(header))
    for (dim, num_boxes), gym_rooms in zip(CONFIGS, args.gym_rooms, strict=True):
        row = {
            "dim_room": list(dim),
            "num_boxes": num_boxes,
            "num_gen_steps": int(1.7 * sum(dim)),
            "ours": {},
        }
        if have_gym:
            row["gym_sokoban"] = time_gym_sokoban(
                args.gym_sokoban_python, dim, num_boxes, gym_rooms, args.seed
            )
        cells = []
        for budget in BUDGETS:
            ours = time_ours(dim, num_boxes, budget, args.rooms, args.seed)
            if have_gym:
                ours["speedup_cpu"] = row["gym_sokoban"]["cpu_ms_mean"] / ours["cpu_ms_mean"]
                ours["speedup_wall"] = row["gym_sokoban"]["wall_ms_mean"] / ours["wall_ms_mean"]
            row["ours"][f"budget_{budget}"] = ours
            ratio = f"{ours['speedup_cpu']:6.0f}x" if have_gym else f"{'-':>7}"
            cells.append(f"{ours['cpu_ms_mean']:10.2f} {ratio}")
        theirs = f"{row['gym_sokoban']['cpu_ms_mean']:12.1f}" if have_gym else f"{'n/a':>12}"
        within = (
            f"{100 * row['gym_sokoban']['solvable_within_10_actions']:>8.0f}%" if have_gym else f"{'n/a':>9}"
        )
        print(f"{f'{dim[0]}x{dim[1]}/{num_boxes}':>10} | {theirs} | " + " | ".join(cells) + f" | {within}")
        rows.append(row)

    print("\nMean (max) optimal solution length of the rooms")
    for row in rows:
        dim, num_boxes = row["dim_room"], row["num_boxes"]
        theirs = row.get("gym_sokoban")
        cells = (
            [f"gym-sokoban {theirs['optimal_length_mean']:5.2f} ({theirs['optimal_length_max']})"]
            if theirs
            else []
        )
        cells += [
            f"ours @{b} {row['ours'][f'budget_{b}']['optimal_length_mean']:5.2f} "
            f"({row['ours'][f'budget_{b}']['optimal_length_max']})"
            for b in BUDGETS
        ]
        print(f"{f'{dim[0]}x{dim[1]}/{num_boxes}':>10} | " + " | ".join(cells))

    result = {
        "benchmark": "sokoban_generation",
        "unit": "ms per room",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "gym_sokoban_available": have_gym,
        "note": "gym-sokoban does not bound the solution length; ours guarantees an optimal solution "
        "within the budget (checked for every room by the forward solver)",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    if have_gym:
        targets = [row["ours"]["budget_10"]["speedup_cpu"] >= 10 for row in rows if row["num_boxes"] >= 2]
        print("target (>= 10x at 8x8/2 and 10x10/3, default budget):", "met" if all(targets) else "NOT met")


if __name__ == "__main__":
    sys.exit(main())
