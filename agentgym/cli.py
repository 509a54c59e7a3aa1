"""The ``agentgym`` command line: ``envs``, ``eval`` and the sub-commands of other parts."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

import agentgym
from agentgym.errors import UsageError, check_writable_dir

# Sub-commands that live beside their feature: module path -> its add_parser(subparsers) function.
_PLUGGED = [
    "agentgym.sandbox.cli",
    "agentgym.trainers.cli",
    "agentgym.eval.leaderboard",
    "agentgym.integrations.cli",
    "agentgym.engineer.cli",
]


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"dim_room\": [6, 6]}'")
    return value


def _cmd_envs(args: argparse.Namespace) -> int:
    width = max(len(env_id) for env_id in agentgym.ENVS)
    for env_id, (_, description) in agentgym.ENVS.items():
        print(f"{env_id:<{width}}  {description}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from agentgym.eval.format_variants import evaluate_format_variants
    from agentgym.eval.run_files import write_summary
    from agentgym.eval.runner import evaluate

    executor = None
    if args.ray is not None:
        try:
            from agentgym.integrations.ray import RayExecutor
        except ModuleNotFoundError as exc:
            if exc.name != "ray":
                raise
            from agentgym.errors import UsageError

            raise UsageError('--ray needs Ray on this machine: pip install "agentgym[ray]"') from None
        executor = RayExecutor(args.ray or None, workers=args.workers)
    common = {
        "seed": args.seed,
        "workers": 1 if args.workers is None else args.workers,
        "env_kwargs": args.env_kwargs,
        "policy_kwargs": args.policy_kwargs,
        "batch_size": args.batch_size,
        "progress": not args.no_progress,
        "executor": executor,
    }
    if args.submit:  # before the eval, not after it
        check_writable_dir(args.leaderboard_dir, "--leaderboard-dir")
    if args.format_variants:
        from agentgym.formats import VARIANTS
        from agentgym.registry import check_env, response_format_name

        check_env(args.env, args.env_kwargs)
        base = response_format_name(args.env, args.env_kwargs)
        if not VARIANTS.get(base):
            raise UsageError(
                f"--format-variants: format {base!r} has no schema variants; known: {', '.join(VARIANTS)}"
            )
    policy = args.policy
    if args.format_variants and common["workers"] == 1 and executor is None:
        from agentgym.policies import make_policy

        policy = make_policy(args.policy, **args.policy_kwargs)  # load a model once for every schema
    try:
        summary = evaluate(
            args.env,
            policy,
            args.episodes,
            out=args.out,
            diagnostics=not args.no_diagnostics,
            diagnostics_samples=args.diagnostics_samples,
            diagnostics_share=args.diagnostics_share or None,
            **common,
        )
        if args.format_variants:
            summary["format_variants"] = evaluate_format_variants(
                args.env, policy, args.episodes, trained=summary, out=args.out, **common
            )
            if args.out:
                write_summary(args.out, summary)
    finally:
        if not isinstance(policy, str):
            policy.close()
        if executor is not None:
            executor.close()
    shown = {
        k: summary[k]
        for k in (
            "env",
            "policy",
            "episodes",
            "aborted",
            "success_rate",
            "success_ci95",
            "mean_return",
            "format_valid_rate",
            "mean_turns",
        )
    }
    if "diagnostics" in summary:
        d = summary["diagnostics"]
        shown["mi_first_turn"] = d["mi"]["first_turn"].get("mi")
        shown["entropy"] = d["entropy"]
    if "format_variants" in summary:
        shown["format_variants"] = {
            name: {"success_drop": v["success_drop"], "format_valid_drop": v["format_valid_drop"]}
            for name, v in summary["format_variants"]["variants"].items()
        }
    print(json.dumps(shown, indent=2))
    if args.out:
        print(f"wrote {args.out}/trajectories.jsonl and {args.out}/summary.json")
    if args.submit:
        from agentgym.eval.leaderboard import render, submit_run

        path = submit_run(summary, args.leaderboard_dir)
        render(args.leaderboard_dir)
        print(f"added {path} and re-rendered {args.leaderboard_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentgym", description=agentgym.__doc__)
    parser.add_argument("--version", action="version", version=f"agentgym {agentgym.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    envs = sub.add_parser("envs", help="list the environments")
    envs.set_defaults(func=_cmd_envs)

    ev = sub.add_parser("eval", help="evaluate a policy on an environment")
    ev.add_argument("--env", required=True, help="environment id, e.g. agentgym/Sokoban-v0")
    ev.add_argument(
        "--policy",
        required=True,
        help="random | oracle | hf:<name or path> | openai:<model>@<base_url> | checkpoint:<run dir>",
    )
    ev.add_argument("--episodes", type=int, default=100)
    ev.add_argument("--seed", type=int, default=0, help="episode i uses seed SEED + i")
    ev.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default 1); with --ray, at most this many players at once (default: as "
        "many as the cluster has CPUs)",
    )
    ev.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="play the episodes on a Ray cluster: no value starts (or attaches to) a local Ray; auto, "
        "host:port or ray://host:port attach to a running one",
    )
    ev.add_argument("--out", default=None, help="output directory (rerun with the same one to resume)")
    ev.add_argument(
        "--env-kwargs", type=_json_object, default={}, help="JSON keyword arguments of gymnasium.make"
    )
    ev.add_argument(
        "--policy-kwargs",
        type=_json_object,
        default={},
        help="JSON keyword arguments of the policy, e.g. '{\"temperature\": 0.7}'",
    )
    ev.add_argument("--batch-size", type=int, default=None, help="episodes played at once per worker")
    ev.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    ev.add_argument(
        "--no-diagnostics",
        action="store_true",
        help="skip MI, entropy and control-token diagnostics of hf:/checkpoint: policies",
    )
    ev.add_argument(
        "--diagnostics-samples",
        type=int,
        default=64,
        help="(prompt, reasoning) pairs per MI estimate (the cost grows as its square)",
    )
    ev.add_argument(
        "--diagnostics-share",
        type=float,
        default=0.25,
        help="bound the diagnostics to this share of the tokens the episodes took to play (about that "
        "share of the eval's time): fewer MI samples and scored turns; 0: no bound",
    )
    ev.add_argument(
        "--format-variants",
        action="store_true",
        help="also evaluate under the schema variants of the active format; report the drops",
    )
    ev.add_argument("--submit", action="store_true", help="add this run to the leaderboard and re-render it")
    ev.add_argument("--leaderboard-dir", default="leaderboards", help="where --submit stores runs")
    ev.set_defaults(func=_cmd_eval)

    for module in _PLUGGED:
        try:
            add_parser = importlib.import_module(module).add_parser
        except ModuleNotFoundError as exc:
            if not module.startswith(exc.name or "-"):  # the module exists but an import of it is missing
                raise
            continue
        add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; a :class:`UsageError` (bad input) is printed as one line with exit status 2, anything
    else is a bug and keeps its traceback. argparse reports its own errors (exit status 2 too)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"agentgym: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
