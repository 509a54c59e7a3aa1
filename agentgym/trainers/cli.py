"""``agentgym train --config FILE [key=value ...]``: plugged into ``agentgym.cli``."""

from __future__ import annotations

import argparse
import json


def _cmd_train(args: argparse.Namespace) -> int:
    from agentgym.trainers.config import load_config
    from agentgym.trainers.trainer import train

    config = load_config(args.config, args.overrides)
    summary = train(config)
    if summary:
        print(json.dumps(summary, indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a policy with RL (PPO, GRPO, Dr.GRPO) and SFT",
        description="Train from a YAML config; key=value arguments override it (OmegaConf dotlist), "
        "e.g. trainer.steps=100 algorithm.name=ppo. Rerun with the same trainer.output_dir to "
        "resume from its last checkpoint.",
    )
    parser.add_argument("--config", required=True, help="a YAML config, e.g. configs/quickstart.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.set_defaults(func=_cmd_train)
