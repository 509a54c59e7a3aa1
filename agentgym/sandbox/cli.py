"""``agentgym sandbox run FILE | doctor | build-image``; the main CLI adds it with ``add_parser``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agentgym.errors import UsageError
from agentgym.sandbox import BACKENDS


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``sandbox`` command on the main parser's ``subparsers``."""
    parser = subparsers.add_parser(
        "sandbox",
        help="run code in the sandbox; check the sandbox backends",
        description="Sandboxed code execution.",
    )
    commands = parser.add_subparsers(dest="sandbox_command", metavar="{run,doctor,build-image}")

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=usage)

    run = commands.add_parser("run", help="run a Python file in the sandbox and print the result as JSON")
    run.add_argument("file", help="the Python file to run ('-' reads the code from stdin)")
    run.add_argument("--backend", default="auto", choices=("auto", *BACKENDS))
    run.add_argument("--timeout", type=float, default=10.0, help="wall-clock seconds (default 10)")
    run.add_argument("--stdin", default=None, help="text given to the program on its stdin")
    run.add_argument("--stdin-file", default=None, help="a file whose content is the program's stdin")
    run.add_argument("--memory-mb", type=int, default=512)
    run.add_argument("--max-processes", type=int, default=16)
    run.set_defaults(func=_run)

    doctor = commands.add_parser("doctor", help="report which backends work here and which is the default")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.set_defaults(func=_doctor)

    build = commands.add_parser(
        "build-image",
        help="build the docker backend's image from sandboxes/Dockerfile",
        description="Build the docker backend's image (sandboxes/Dockerfile, user 10001, stdlib only).",
    )
    build.add_argument(
        "--offline",
        action="store_true",
        help="no registry: base the image on a Debian root file system made by debootstrap "
        "(runs sandboxes/build-offline-image.sh; needs root, debootstrap and the Debian mirror)",
    )
    build.add_argument("--image", default=None, help="the tag to build (default agentgym-sandbox:latest)")
    build.set_defaults(func=_build_image)
    return parser


def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:  # missing, a directory, unreadable
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


def _run(args: argparse.Namespace) -> int:
    from agentgym.sandbox import Sandbox, SandboxError

    if args.stdin is not None and args.stdin_file is not None:
        raise UsageError("give --stdin or --stdin-file, not both")
    stdin = _read_text(args.stdin_file, "--stdin-file") if args.stdin_file else (args.stdin or "")
    code = sys.stdin.read() if args.file == "-" else _read_text(args.file, "the program")
    try:
        box = Sandbox(
            args.backend,
            timeout=args.timeout,
            memory_mb=args.memory_mb,
            max_processes=args.max_processes,
            pool_size=0,
        )
    except ValueError as exc:  # a limit out of range, or a bad AGENTGYM_SANDBOX
        raise UsageError(str(exc)) from exc
    except SandboxError as error:
        print(f"sandbox error: {error}", file=sys.stderr)
        return 1
    try:
        with box:
            result = box.run(code, stdin=stdin)
    except SandboxError as error:
        print(f"sandbox error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from agentgym.sandbox.doctor import diagnose, render

    report = diagnose()
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def _build_image(args: argparse.Namespace) -> int:
    from agentgym.sandbox import SandboxError
    from agentgym.sandbox.docker_backend import DEFAULT_IMAGE, build_image

    image = args.image or DEFAULT_IMAGE
    try:
        image_id = build_image(image, offline=args.offline)
    except SandboxError as error:
        print(f"sandbox error: {error}", file=sys.stderr)
        return 1
    print(f"built {image} ({image_id})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``sandbox`` command alone (``python -m agentgym.sandbox.cli doctor``)."""
    parser = argparse.ArgumentParser(prog="agentgym")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sandbox", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"agentgym: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
