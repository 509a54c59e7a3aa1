"""``agentgym serve --env ID``: an environment server speaking OpenEnv's protocol; the main CLI adds it with
``add_parser``. The server's dependencies (fastapi, uvicorn, websockets) are imported only when it runs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agentgym.errors import UsageError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``serve`` command on the main parser's ``subparsers``."""
    parser = subparsers.add_parser(
        "serve",
        help="serve an environment over OpenEnv's HTTP/WebSocket protocol",
        description="Serve an agentgym environment to other tools over OpenEnv's protocol: a WebSocket "
        "session per connection at /ws, HTTP /reset /step /state /schema /health. Clients: "
        "gymnasium.make('agentgym/Remote-v0', url=...) or OpenEnv's GenericEnvClient.",
    )
    parser.add_argument("--env", required=True, help="environment id, e.g. agentgym/Sokoban-v0")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--env-kwargs", default="{}", help="JSON keyword arguments of gymnasium.make")
    parser.add_argument(
        "--max-sessions", type=int, default=8, help="environments alive at once (default 8); more are refused"
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=600.0,
        help="close a session after this many seconds without a message (default 600; 0: never)",
    )
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    parser.set_defaults(func=_serve)
    return parser


def _serve(args: argparse.Namespace) -> int:
    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--env-kwargs is not valid JSON: {exc.msg}") from None
    if not isinstance(env_kwargs, dict):
        raise UsageError("--env-kwargs must be a JSON object, e.g. '{\"max_turns\": 10}'")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    if args.max_sessions < 1:
        raise UsageError(f"--max-sessions must be at least 1, got {args.max_sessions}")
    if args.idle_timeout < 0:
        raise UsageError(f"--idle-timeout must be 0 (never) or positive, got {args.idle_timeout}")
    try:
        from agentgym.integrations.openenv_server import serve
    except ImportError as exc:
        raise UsageError(
            f"agentgym serve needs fastapi, uvicorn and websockets ({exc.name} is missing): "
            "pip install 'agentgym[serve]'"
        ) from None

    def ready(url: str) -> None:
        ws = url.replace("http://", "ws://", 1)
        print(
            f"serving {args.env} on {url} (WebSocket sessions at {ws}/ws, at most {args.max_sessions}); "
            f'clients: gymnasium.make("agentgym/Remote-v0", url="{ws}")',
            flush=True,
        )

    serve(
        args.env,
        env_kwargs,
        host=args.host,
        port=args.port,
        max_sessions=args.max_sessions,
        idle_timeout=args.idle_timeout or None,
        log_level=args.log_level,
        on_ready=ready,
    )
    return 0
