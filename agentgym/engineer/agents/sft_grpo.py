"""A scripted engineer: SFT warm start on oracle trajectories of the train split, then GRPO, with
``agentgym train``; every checkpoint is submitted as soon as it is saved.

What it does, as a person following ``instructions.md`` would:

1. reads ``description.md`` and the train split's ``data/train/README.md``, which gives the environment and
   the keyword arguments of train episodes (data paths relative to the workspace);
2. writes ``code/sft_grpo.yaml``: the CPU quickstart's recipe (``configs/quickstart.yaml``: SFT on oracle
   episodes of train seeds, then GRPO with 8 prompts x 8 rollouts and RAGEN-2's SNR-aware filter) starting
   from ``models/base``, into ``output/run``;
3. runs ``agentgym train`` in the background, submits ``checkpoint-0`` (after SFT) and each later
   checkpoint through the grader's socket, and prints every answer;
4. stops training a little before the deadline so the last checkpoint can still be submitted.

Every seed it trains on is a train seed (the trainer's defaults lie far below the held-out seeds).
``--steps``, ``--save-every`` and ``--sft-episodes`` scale it to the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from agentgym.engineer.server import GradingClient

RESERVE_S = 30.0  # stop training this long before the deadline: time to submit the last checkpoint


def train_env(workspace: Path) -> tuple[str, dict[str, Any]]:
    """(env id, train kwargs) from description.md and data/train/README.md."""
    description = (workspace / "description.md").read_text(encoding="utf-8")
    match = re.search(r"Environment: `([^`]+)`", description)
    if match is None:
        raise SystemExit("description.md names no environment")
    env_id = match.group(1)
    kwargs: dict[str, Any] = {}
    readme = workspace / "data" / "train" / "README.md"
    if readme.exists():
        block = re.search(r"```json\n(.*?)\n```", readme.read_text(encoding="utf-8"), re.S)
        if block:
            kwargs = json.loads(block.group(1))
    return env_id, kwargs


def config(env_id: str, env_kwargs: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The quickstart's recipe on the base model, with no evaluation of its own (the grader scores)."""
    return {
        "model": {"path": str(Path("models/base").resolve())},
        "env": {"id": env_id, "kwargs": env_kwargs},
        "rollout": {"prompts_per_step": 8, "group_size": 8, "temperature": 0.5, "max_new_tokens": 40},
        "sft": {"episodes": args.sft_episodes, "epochs": 4, "lr": 1.0e-3, "batch_size": 16},
        "algorithm": {"name": "grpo", "lr": 2.0e-4, "micro_batch_size": 16},
        "filter": {"strategy": "top_p", "value": 0.9, "include_zero": False},
        "trainer": {
            "output_dir": "output/run",
            "steps": args.steps,
            "save_every": args.save_every,
            "eval_episodes": 0,
            "progress": False,
            "plots": False,
            "threads": os.cpu_count() or 1,
        },
    }


def checkpoints(run_dir: Path) -> list[Path]:
    """Saved checkpoints in step order (the trainer renames a finished one into place: never half-written)."""
    found = [p for p in run_dir.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentgym.engineer.agents.sft_grpo", description=__doc__)
    parser.add_argument("--steps", type=int, default=30, help="GRPO steps")
    parser.add_argument("--save-every", type=int, default=5, help="steps between checkpoints")
    parser.add_argument("--sft-episodes", type=int, default=192, help="oracle episodes of the warm start")
    args = parser.parse_args(argv)

    workspace = Path(os.environ.get("AGENTGYM_WORKSPACE", "."))
    os.chdir(workspace)
    deadline = float(os.environ.get("AGENTGYM_DEADLINE", time.time() + 3600))
    client = GradingClient(unix_socket=os.environ.get("AGENTGYM_GRADER", "grader.sock"))
    env_id, env_kwargs = train_env(workspace)
    print(
        f"task environment {env_id} {json.dumps(env_kwargs)}; {deadline - time.time():.0f}s left", flush=True
    )

    Path("code").mkdir(exist_ok=True)
    recipe = Path("code/sft_grpo.yaml")
    recipe.write_text(yaml.safe_dump(config(env_id, env_kwargs, args), sort_keys=False), encoding="utf-8")
    train = subprocess.Popen([sys.executable, "-m", "agentgym.cli", "train", "--config", str(recipe)])
    submitted: set[str] = set()
    best = None

    def submit_new() -> None:
        nonlocal best
        for checkpoint in checkpoints(Path("output/run")):
            if checkpoint.name in submitted:
                continue
            submitted.add(checkpoint.name)
            answer = client.submit(f"output/run/{checkpoint.name}")
            print(f"submitted {checkpoint.name}: {json.dumps(answer)}", flush=True)
            if answer.get("status") == "scored":
                best = answer.get("best")

    while train.poll() is None:
        if time.time() > deadline - RESERVE_S:
            print("close to the deadline: stopping training", flush=True)
            train.send_signal(signal.SIGTERM)
            train.wait()
            break
        submit_new()
        time.sleep(2)
    submit_new()
    print(f"done: training exited with {train.returncode}; best score {best}", flush=True)
    return 0 if submitted else 1


if __name__ == "__main__":
    sys.exit(main())
