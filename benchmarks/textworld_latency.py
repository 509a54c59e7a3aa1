"""TextWorld-v0 and ALFWorld-v0 latency: game generation (cold and cached), reset and step.

    python benchmarks/textworld_latency.py [--games 3] [--steps 40]

TextWorld: generating a game (TextWorld's generator + the bundled Inform 7 compiler) into an empty cache,
then fetching the same game from the cache; a reset that loads a new game, a reset of the loaded game;
a step (one admissible command). ALFWorld (the shared samples, skipped without them): the first reset
(loads and parses the game), a reset after an episode (TextWorld's PDDL engine rebuilds the state), a
reset before any command (reuses the start state) and a step, with the handcoded expert's bookkeeping.
Prints a table with side-by-side ratios and writes benchmarks/results/textworld_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import agentgym  # noqa: F401
from agentgym.envs.alfworld import ALFWorldEnv
from agentgym.envs.textworld import TextWorldEnv, generate_game

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZES = [(1, 2, 1), (5, 10, 5), (10, 20, 10)]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def play_steps(env, steps: int, seeds) -> list[float]:
    """Step latency of oracle commands, resetting (untimed) when an episode ends."""
    samples, seeds = [], iter(seeds)
    env.reset(**next(seeds))
    while len(samples) < steps:
        action = env.oracle_action()
        start = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        samples.append(time.perf_counter() - start)
        if terminated or truncated:
            env.reset(**next(seeds))
    return samples


def bench_textworld(games: int, steps: int) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        generate_game(1, 1, 1, 0, cache)  # warm up: imports, TextWorld's knowledge base
        for world_size, nb_objects, quest_length in SIZES:
            settings = [(world_size, nb_objects, quest_length, s, cache) for s in range(1, games + 1)]
            cold = [timed(lambda a=a: generate_game(*a)) for a in settings]
            cached = [timed(lambda a=a: generate_game(*a)) for a in settings]
            results[f"generate_w{world_size}_o{nb_objects}_q{quest_length}"] = {
                "cold_ms": median_ms(cold),
                "cached_ms": median_ms(cached),
            }
        env = TextWorldEnv(cache_dir=cache, max_turns=50)
        seeds = [{"options": {"game_seed": s}} for s in range(1, games + 1)]
        for options in seeds:
            generate_game(
                env.world_size, env.nb_objects, env.quest_length, options["options"]["game_seed"], cache
            )
        new_game = [timed(lambda o=o: env.reset(**o)) for o in seeds]  # each reset loads another game
        same_game = [timed(lambda: env.reset(**seeds[-1])) for _ in range(games)]
        step = play_steps(env, steps, seeds * 100)
        env.close()
        results["default_game_w5_o10_q5"] = {
            "reset_new_game_ms": median_ms(new_game),
            "reset_same_game_ms": median_ms(same_game),
            "step_ms": median_ms(step),
        }
    return results


def bench_alfworld(steps: int) -> dict:
    data = SHARED / "alfworld"
    if not data.is_dir():
        return {"skipped": f"{data} is absent"}
    trial = {"options": {"game_index": 0}}
    env = ALFWorldEnv(data_dir=data)
    first = timed(lambda: env.reset(**trial))
    untouched = [timed(lambda: env.reset(**trial)) for _ in range(3)]
    after_play = []
    for _ in range(3):
        env.step(env.oracle_action())
        after_play.append(timed(lambda: env.reset(**trial)))
    step = play_steps(env, steps, [trial] * 100)
    env.close()
    return {
        "real_trial": {
            "reset_first_load_ms": round(first * 1000, 3),
            "reset_after_play_ms": median_ms(after_play),
            "reset_untouched_ms": median_ms(untouched),
            "step_ms": median_ms(step),
        }
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=3, help="games per size (generation) and for resets")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "textworld_latency.json"))
    args = parser.parse_args()

    import textworld

    textworld_results = bench_textworld(args.games, args.steps)
    alfworld_results = bench_alfworld(args.steps)
    results = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "textworld": textworld.__version__,
        },
        "settings": {"games": args.games, "steps": args.steps},
        "textworld": textworld_results,
        "alfworld": alfworld_results,
    }
    print(f"{'measure':42s} {'median ms':>12s} {'ratio':>10s}")
    for key, row in textworld_results.items():
        if "cold_ms" in row:
            ratio = row["cold_ms"] / max(row["cached_ms"], 1e-6)
            print(f"{key + ' cold':42s} {row['cold_ms']:12.1f}")
            print(f"{key + ' cached':42s} {row['cached_ms']:12.3f} {ratio:9.0f}x faster")
        else:
            for name, value in row.items():
                print(f"TextWorld {name:32s} {value:12.2f}")
    for key, row in alfworld_results.items():
        if key == "skipped":
            print(f"ALFWorld skipped: {row}")
            continue
        for name, value in row.items():
            print(f"ALFWorld {name:33s} {value:12.2f}")
        ratio = row["reset_after_play_ms"] / row["step_ms"]
        print(f"{'ALFWorld reset after play / step':42s} {'':12s} {ratio:9.1f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
