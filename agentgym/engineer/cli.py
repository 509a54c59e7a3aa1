"""``agentgym engineer``: plugged into ``agentgym.cli``."""

from __future__ import annotations

import argparse
import json

from agentgym.errors import UsageError

EXAMPLE = """examples:
  agentgym engineer --list-tasks
  agentgym engineer --task frozenlake --base-model tiny --budget 20m --out runs/eng-sft-grpo \\
      --env-kwargs '{"size": 3}' --heldout-episodes 64 \\
      --agent "python -m agentgym.engineer.agents.sft_grpo"
  agentgym engineer --task gsm8k --base-model ~/models/Qwen2.5-0.5B-Instruct --budget 12h \\
      --out runs/claude-gsm8k --allow-network --pass-env ANTHROPIC_API_KEY --driver-model claude-sonnet-4-5 \\
      --agent 'claude -p "$(cat instructions.md description.md)" --dangerously-skip-permissions'

Rerun the same command with the same --out to resume a run whose host process died."""


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"size\": 3}'")
    return value


def _list_tasks() -> int:
    from agentgym.engineer.tasks import TASKS

    width = max(len(name) for name in TASKS)
    for name, task in TASKS.items():
        print(f"{name:<{width}}  {task.title} ({task.env_id}, {task.heldout_episodes} held-out episodes)")
    return 0


def _cmd_engineer(args: argparse.Namespace) -> int:
    if args.list_tasks:
        return _list_tasks()
    missing = [
        flag
        for flag, value in (
            ("--task", args.task),
            ("--base-model", args.base_model),
            ("--budget", args.budget),
            ("--agent", args.agent),
            ("--out", args.out),
        )
        if value is None
    ]
    if missing:
        raise UsageError(f"agentgym engineer needs {', '.join(missing)} (or --list-tasks)")
    from agentgym.engineer.run import parse_budget, run_engineer

    results = run_engineer(
        args.task,
        args.base_model,
        parse_budget(args.budget),
        args.agent,
        args.out,
        allow_network=args.allow_network,
        workers=args.workers,
        heldout_episodes=args.heldout_episodes,
        driver_model=args.driver_model,
        agent_name=args.agent_name,
        env_kwargs=args.env_kwargs,
        expose=args.expose,
        pass_env=args.pass_env,
        data_root=args.data_root,
        grace_s=args.grace,
    )
    print(json.dumps(results, indent=2, default=str))
    if args.submit:
        from agentgym.engineer.reports import submit_run
        from agentgym.eval.leaderboard import render

        path = submit_run(args.out, args.leaderboard_dir)
        render(args.leaderboard_dir)
        print(f"added {path} and re-rendered {args.leaderboard_dir}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "engineer",
        help="an agent engineers post-training of a model in an isolated workspace within a budget",
        description="An agent (any command: a scripted one, Claude Code, Codex CLI, OpenHands) gets an "
        "isolated workspace\nwith a base model and a task's train split, and a wall-clock budget; a grading "
        "server scores its\nsubmitted models on the held-out split. Reports per attempt and per run land in "
        "--out.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--list-tasks", action="store_true", help="list the tasks and exit")
    parser.add_argument("--task", help="the task (see --list-tasks)")
    parser.add_argument("--base-model", help="a local Hugging Face model folder, or 'tiny' (built here)")
    parser.add_argument("--budget", help="wall-clock budget of the agent: 90s, 30m, 2h, 1h30m")
    parser.add_argument("--agent", help="the agent's shell command, run in /workspace inside the sandbox")
    parser.add_argument("--out", help="the run folder (rerun with the same one to resume)")
    parser.add_argument(
        "--allow-network", action="store_true", help="share the host's network (a real agent's LLM API)"
    )
    parser.add_argument("--driver-model", default=None, help="label of the LLM driving the agent")
    parser.add_argument("--agent-name", default=None, help="label of the agent (default: from --agent)")
    parser.add_argument("--workers", type=int, default=1, help="processes of each held-out evaluation")
    parser.add_argument(
        "--heldout-episodes", type=int, default=None, help="held-out episodes per evaluation (task default)"
    )
    parser.add_argument(
        "--env-kwargs",
        type=_json_object,
        default=None,
        help="JSON changes to the task's environment, both splits (e.g. '{\"size\": 3}' for FrozenLake)",
    )
    parser.add_argument(
        "--expose", action="append", default=[], metavar="PATH", help="show a host path read-only inside"
    )
    parser.add_argument(
        "--pass-env", action="append", default=[], metavar="NAME", help="pass a variable into the sandbox"
    )
    parser.add_argument("--data-root", default=None, help="where task data lives ($AGENTGYM_SHARED_DATA)")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds from SIGTERM to SIGKILL")
    parser.add_argument("--submit", action="store_true", help="add the run's outcome to the leaderboard")
    parser.add_argument("--leaderboard-dir", default="leaderboards", help="where --submit stores runs")
    parser.set_defaults(func=_cmd_engineer)
