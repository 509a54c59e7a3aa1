"""``agentgym train --config FILE [key=value ...]``: plugged into ``agentgym.cli``."""

from __future__ import annotations

import argparse
import json

from agentgym.trainers.config import describe, load_config


def _cmd_train(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)  # a bad config fails before the trainer loads
    from agentgym.trainers.trainer import train

    summary = train(config)
    if summary:
        print(json.dumps(summary, indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a policy with RL (PPO, GRPO, Dr.GRPO) and SFT",
        description="Train from a YAML config; key=value arguments override it (OmegaConf dotlist),\n"
        "e.g. trainer.steps=100 algorithm.name=ppo. Rerun with the same trainer.output_dir to resume\n"
        "from its last checkpoint.",
        epilog="config keys (in the YAML file, or key=value):\n" + describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="a YAML config, e.g. configs/quickstart.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.set_defaults(func=_cmd_train)
