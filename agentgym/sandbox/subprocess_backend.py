"""The subprocess backend: rlimits, a timeout and a process-group kill, and nothing else.

This is NOT isolation. The program runs as the calling user with the host's filesystem and network:
it can read the user's files, talk to the network and (if it starts a new session) leave processes
behind. Run as root, RLIMIT_NPROC is not enforced either, so not even a fork bomb is contained. Its
working directory is a fresh temporary directory and its environment is minimal, which protects
against accidents, not against hostile code. Use it only for trusted code or where neither
bwrap nor docker is available; it warns every time it is chosen.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from agentgym.sandbox.base import PYTHON_FLAGS, RUNNER_SOURCE, Limits, Worker, python_executable, start_worker
from agentgym.sandbox.pool import PooledBackend

log = logging.getLogger(__name__)
WARNING = (
    "the 'subprocess' sandbox backend is NOT isolation: code runs as this user with the host's files and "
    "network, limited only by rlimits and a timeout; use bwrap or docker for untrusted code"
)


class SubprocessBackend(PooledBackend):
    name = "subprocess"

    def __init__(self, limits: Limits, pool_size: int = 2) -> None:
        warnings.warn(WARNING, RuntimeWarning, stacklevel=3)
        log.warning(WARNING)
        self.python = python_executable()
        super().__init__(limits, pool_size)

    def start(self, timeout: float) -> Worker:
        scratch = Path(tempfile.mkdtemp(prefix="agentgym-sandbox-"))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(scratch),
            "TMPDIR": str(scratch),
            "LANG": "C.UTF-8",
        }
        # RLIMIT_NPROC counts all of this user's processes and threads: without the ones it already
        # has, a user with a desktop session could not start a single process in a run.
        processes = self.limits.max_processes + (_tasks_of_user(os.getuid()) if os.geteuid() != 0 else 0)
        argv = [
            self.python,
            *PYTHON_FLAGS,
            "-c",
            RUNNER_SOURCE,
            *self.limits.runner_args(timeout, processes=processes),
        ]
        try:
            return start_worker(argv, cwd=str(scratch), env=env, cleanup=scratch)
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)
            raise


def _tasks_of_user(uid: int) -> int:
    """How many processes and threads ``uid`` runs now (what RLIMIT_NPROC compares against)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                pass  # it ended meanwhile
    return count
