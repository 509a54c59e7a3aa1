"""The files of an eval run directory, written so that a run killed at any moment can resume.

- ``run.json``: what the run is (env, policy, seed, kwargs). A directory holds one run: resuming with a
  different one is refused rather than mixing episodes of two runs.
- ``eval.lock``: held (``fcntl.flock``) by the process evaluating into the directory, with its pid in it
  (:class:`RunDirLock`); a second eval on the same directory fails at once instead of interleaving its
  episodes with the first one's. The kernel drops the lock when its holder dies, so a kill leaves no
  stale lock behind.
- ``trajectories.jsonl``: one line per finished episode (:func:`episode_record`), appended, flushed and
  fsynced (:class:`TrajectoryLog`), so a kill loses at most the episodes in flight. A later line for a
  seed supersedes an earlier one (an aborted episode replayed by a rerun); :meth:`TrajectoryLog.compact`
  drops superseded lines at the end of a run. An episode lost with the process playing it (a Ray actor
  that died) is stored as an aborted record (:func:`lost_episode_record`), so a rerun plays it again.
  When the log is read back, a last line without its newline (a write torn by a kill) is cut off; any
  other unreadable line is skipped with a warning, counted and left in place, and the records after it
  are kept.
- ``summary.json``: rewritten whole and atomically (write a temporary file, then rename).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agentgym.errors import UsageError
from agentgym.rollout import Episode

LOCK_FILE = "eval.lock"


class RunDirBusy(UsageError, RuntimeError):
    """Another process is evaluating into the same run directory (a ``RuntimeError`` as it always was,
    and a :class:`UsageError`: the user picks another directory or waits)."""


class RunDirLock:
    """An exclusive lock on a run directory for as long as one eval writes to it.

    ``fcntl.flock`` on ``OUT/eval.lock``, taken without waiting: if another process holds it,
    :class:`RunDirBusy` names that process's pid (which the holder writes into the file). Use it as a
    context manager, or call :meth:`release`.
    """

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out) / LOCK_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise RunDirBusy(
                f"{self.path.parent} is in use by another eval ({holder}); two evals on one --out would "
                "mix their episodes: wait for it to finish or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # the pid of a process that no longer holds it would mislead
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_holder(fd: int, wait: float = 1.0) -> str:
    """Who holds the lock, from what it wrote into the lock file (it writes just after locking)."""
    deadline = time.monotonic() + wait
    while True:
        words = os.pread(fd, 256, 0).decode(errors="replace").split()
        if words and words[0].isdigit():
            host = f" on {words[1]}" if len(words) > 1 and words[1] != socket.gethostname() else ""
            return f"pid {words[0]}{host}"
        if time.monotonic() > deadline:
            return "pid unknown"
        time.sleep(0.05)


def _parse_record(line: bytes) -> dict[str, Any] | None:
    """The record on one line of the log, or None if the line is torn or corrupt."""
    if not line.endswith(b"\n"):
        return None
    try:
        record = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8
        return None
    if not isinstance(record, dict) or type(record.get("seed")) is not int:
        return None
    return record


class TrajectoryLog:
    """An append-only JSONL file of episode records that survives being killed mid-write.

    After :meth:`load`, ``corrupt_lines`` holds the (1-based) numbers of the lines it skipped.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.corrupt_lines: list[int] = []

    def load(self) -> list[dict[str, Any]]:
        """Every readable record, in file order (a seed may appear more than once: the last one counts,
        see :func:`latest_by_seed`). A last line without its newline is a write torn by a kill: it is cut
        off the file, so appends stay clean. Any other unreadable line is skipped with a warning and
        counted in ``corrupt_lines``; it stays in the file, and the records after it are kept."""
        self.corrupt_lines = []
        if not self.path.exists():
            return []
        records: list[dict[str, Any]] = []
        good_bytes = 0
        with self.path.open("rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.endswith(b"\n"):  # only the last line can lack it
                    break
                record = _parse_record(line)
                if record is None:
                    self.corrupt_lines.append(number)
                else:
                    records.append(record)
                good_bytes += len(line)
        if good_bytes != self.path.stat().st_size:
            with self.path.open("r+b") as f:
                f.truncate(good_bytes)
        if self.corrupt_lines:
            shown = ", ".join(map(str, self.corrupt_lines[:10])) + (
                ", ..." if len(self.corrupt_lines) > 10 else ""
            )
            warnings.warn(
                f"{self.path}: skipped {len(self.corrupt_lines)} corrupt line(s) (line {shown}); the records "
                "after them are kept, and the episodes they held, if wanted, are played again",
                stacklevel=2,
            )
        return records

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def compact(self) -> int:
        """Drop every record that a later record of the same seed supersedes; return how many were
        dropped. The file is rewritten atomically, and only when something is dropped; every other line,
        a corrupt one included, stays as it was, in its place."""
        if not self.path.exists():
            return 0
        with self.path.open("rb") as f:
            lines = f.readlines()
        seeds = [None if (r := _parse_record(line)) is None else r["seed"] for line in lines]
        last = {seed: i for i, seed in enumerate(seeds) if seed is not None}
        # a corrupt line (seed None) stays; a record stays if no later record has its seed
        kept = [line for i, line in enumerate(lines) if last.get(seeds[i], i) == i]
        dropped = len(lines) - len(kept)
        if dropped:
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            with tmp.open("wb") as f:
                f.writelines(kept)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        return dropped


def latest_by_seed(records: Iterable[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Seed -> record, a later record of a seed superseding an earlier one (log order)."""
    return {record["seed"]: record for record in records}


def episode_record(episode: Episode) -> dict[str, Any]:
    """The ``trajectories.jsonl`` line of an episode, with the exact sampled token ids of model policies
    (``response_ids``, one list per turn) so diagnostics score what was generated, not a re-tokenization,
    and ``aborted`` / ``abort_reason``: whether the environment aborted the episode (``info["aborted"]``
    on its last step) and why (that step's ``info["error"]``)."""
    record = episode.to_record()
    # an aborted episode (the env cut it for a reason of its own, e.g. a crashed browser) says why; the
    # summary leaves it out of the metrics and a rerun plays it again
    aborted = bool(episode.final_info.get("aborted"))
    record["aborted"] = aborted
    record["abort_reason"] = str(episode.final_info.get("error") or "no reason given") if aborted else None
    if any(t.response_ids is not None for t in episode.turns):
        record["response_ids"] = [t.response_ids for t in episode.turns]
    return record


def lost_episode_record(env_id: str, seed: int, reason: str) -> dict[str, Any]:
    """The ``trajectories.jsonl`` line of an episode that never finished because the process playing it
    was lost (a Ray actor or node that died): no turns, ``aborted`` with ``reason``, so the summary
    counts it apart from the metrics and a rerun plays it again, as it does an episode the environment
    aborted."""
    return {
        "env": env_id,
        "seed": seed,
        "success": False,
        "return": 0.0,
        "turns": 0,
        "rewards": [],
        "format_ok": [],
        "action_valid": [],
        "terminated": False,
        "messages": [],
        "final_info": {"aborted": True, "error": reason},
        "aborted": True,
        "abort_reason": reason,
    }


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON; readers see the old file or the new one, never a partial one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_summary(out: str | Path, summary: dict[str, Any]) -> None:
    """(Re)write ``OUT/summary.json`` atomically."""
    write_json_atomic(Path(out) / "summary.json", summary)


def run_identity(
    env_id: str, policy_spec: str, seed: int, env_kwargs: dict[str, Any], policy_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The content of ``run.json``: what makes two runs the same run."""
    return {
        "env": env_id,
        "policy": policy_spec,
        "seed": seed,
        "env_kwargs": env_kwargs,
        "policy_kwargs": policy_kwargs,
    }


def claim_run_dir(out: str | Path, run: dict[str, Any]) -> Path:
    """Create ``out`` for ``run`` (see :func:`run_identity`), or check that it already holds that run."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "run.json"
    if run_file.exists():
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8"))
        except ValueError as exc:  # not JSON, or not UTF-8
            raise UsageError(
                f"{run_file} is not readable ({exc}); {out} does not look like an eval run directory: "
                "use another --out"
            ) from None
        if previous != run:
            raise UsageError(f"{out} holds a different run ({previous}); use another --out to evaluate {run}")
    else:
        write_json_atomic(run_file, run)
    return out
