"""Helpers of the engineer tests: one small prepared run (tiny model, 3x3 FrozenLake, baseline measured),
copied for each test so that no test pays for the model build and the baseline again."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_scratch_dir

# Small enough for a shared CPU: 2 turns on a 3x3 lake, 4 held-out episodes, 8 new tokens per turn.
SMALL: dict[str, Any] = {
    "env_kwargs": {"size": 3, "max_turns": 2},
    "heldout_episodes": 4,
    "policy_overrides": {"max_new_tokens": 8},
}
AGENTS = "python -m agentgym.engineer.agents"


def bwrap_problem() -> str | None:
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (apt-get install bubblewrap)"
    from agentgym.sandbox.bwrap import unavailable_reason

    return unavailable_reason()


needs_bwrap = pytest.mark.skipif(bwrap_problem() is not None, reason=f"no usable bwrap: {bwrap_problem()}")


def template_run() -> Path:
    """A run folder that is laid out and has its baseline, but whose agent never started (built once per
    test session: the refused budget of 1 ms stops it right after the baseline)."""
    from agentgym.engineer.run import run_engineer
    from agentgym.errors import UsageError

    folder = run_scratch_dir() / "engineer-template"
    folder.mkdir(parents=True, exist_ok=True)
    run = folder / "run"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers wait for the first one
        if not (run / "grader" / "baseline.json").exists():
            with pytest.raises(UsageError, match="baseline evaluation took"):
                run_engineer("frozenlake", "tiny", 0.001, "true", run, log=lambda _: None, **SMALL)
    return run


def fresh_run(dest: Path) -> Path:
    """A copy of the template run at ``dest`` (the agent can be any command: it never started)."""
    shutil.copytree(template_run(), dest, symlinks=True)
    (dest / "run.lock").unlink(missing_ok=True)
    return dest


def run(out: Path | str, agent: str, budget_s: float, **kwargs: Any) -> dict[str, Any]:
    from agentgym.engineer.run import run_engineer

    options = {**SMALL, "grace_s": 2.0, "log": lambda _: None, **kwargs}
    return run_engineer("frozenlake", "tiny", budget_s, agent, out, **options)


def cli(out: Path, agent: str, budget: str, *extra: str) -> list[str]:
    """The ``agentgym engineer`` command line of a small run."""
    import json

    return [
        sys.executable,
        "-m",
        "agentgym.cli",
        "engineer",
        "--task",
        "frozenlake",
        "--base-model",
        "tiny",
        "--budget",
        budget,
        "--agent",
        agent,
        "--out",
        str(out),
        "--env-kwargs",
        json.dumps(SMALL["env_kwargs"]),
        "--heldout-episodes",
        str(SMALL["heldout_episodes"]),
        "--grace",
        "2",
        *extra,
    ]


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}


def host_process(out: Path, agent: str, budget_s: float) -> subprocess.Popen:
    """A separate host process that runs (or resumes) a small run: a test can kill it or press Ctrl-C."""
    code = f"from engineer_fixtures import run; run({str(out)!r}, {agent!r}, {budget_s!r})"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def processes_matching(tag: str) -> list[int]:
    """Host PIDs whose command line contains ``tag``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if tag.encode() in cmdline:
                found.append(int(entry))
    return found


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
