"""What each sandbox backend can do on this machine, and which one ``auto`` picks."""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass

from agentgym.sandbox import BACKEND_ENV, BACKENDS, choose_backend, unavailable_reason


@dataclass
class BackendStatus:
    backend: str
    available: bool
    isolation: bool  # whether it isolates untrusted code at all
    detail: str  # why it is unavailable, or how it is set up


def diagnose() -> dict:
    """Every backend's status and the default, as a JSON-ready dict."""
    statuses = []
    for backend in BACKENDS:
        reason = unavailable_reason(backend)
        detail = reason or _setup(backend)
        statuses.append(BackendStatus(backend, reason is None, backend != "subprocess", detail))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = choose_backend()
    why = (
        f"forced by {BACKEND_ENV}"
        if os.environ.get(BACKEND_ENV)
        else "the first that works of bwrap, docker, subprocess"
    )
    return {"default": default, "default_reason": why, "backends": [asdict(s) for s in statuses]}


def _setup(backend: str) -> str:
    if backend == "bwrap":
        from agentgym.sandbox import bwrap

        return bwrap.describe()
    if backend == "docker":
        from agentgym.sandbox.docker_backend import DEFAULT_IMAGE

        return f"engine answers, image {DEFAULT_IMAGE} present"
    from agentgym.sandbox.subprocess_backend import WARNING

    return WARNING


def render(report: dict) -> str:
    """The report as text for a terminal."""
    lines = []
    for status in report["backends"]:
        mark = "available  " if status["available"] else "unavailable"
        note = "" if status["isolation"] else " (no isolation)"
        lines.append(f"{status['backend']:<11} {mark}{note}: {status['detail']}")
    lines.append(f"default: {report['default']} ({report['default_reason']})")
    return "\n".join(lines)
